"""The hardening set as data: sysctls, kernel command line, deviations, and the check catalogue
(catalogue.md) whose ids the inventory's waivers and the verifier use."""
