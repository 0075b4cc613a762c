"""The kit's core: errors, input rules, URLs, page tokens, time and the unit-of-work port.

Plain Python with no third-party imports and no other kit layer, so a service's domain and use
cases can depend on it and stay framework-free (an import-linter contract holds this).
"""
