"""Clients above the services, for the people who run the platform: the `quanyu` command, the
importer, the demo and the map."""
