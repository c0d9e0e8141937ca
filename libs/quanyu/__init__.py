"""Quanyu's shared library: what every service needs and no business rule of any one of them."""
