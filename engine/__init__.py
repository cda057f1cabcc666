"""careloop.engine: what the four engines share.

Sources with positions, errors, schemas, expressions, the registry, bundles, storage and the CLI.
See ``docs/architecture.md`` for the pipeline source → check → compile → spec → runtime instance.
"""
