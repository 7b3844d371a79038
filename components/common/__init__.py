"""The shared layer: what several components need, and nothing component-specific.

Component packages import from here, from `components.spec_keys`, `components.errors` and
`components.artifact_types`, and from their own modules; never from each other (see
docs/architecture.md, checked by tests/test_architecture.py). Modules here import their heavy
dependencies themselves, so importing this package costs nothing.
"""
