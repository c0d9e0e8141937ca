"""Marketing's use cases: campaigns managed through their lifecycle, and the grants that events
and schedules make, each through the unit of work."""

from services.marketing.handlers.campaigns import CampaignCases
from services.marketing.handlers.insight import InsightCases, Preview
from services.marketing.handlers.messages import MessageCases
from services.marketing.handlers.results import CampaignResults, ResultCases
from services.marketing.handlers.runs import DueRun, RunCases, RunResult
from services.marketing.handlers.triggers import EventIn, EventKind, Ingested, TriggerCases

__all__ = [
    "CampaignCases",
    "CampaignResults",
    "DueRun",
    "EventIn",
    "EventKind",
    "Ingested",
    "InsightCases",
    "MessageCases",
    "Preview",
    "ResultCases",
    "RunCases",
    "RunResult",
    "TriggerCases",
]
