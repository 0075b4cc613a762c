"""PostgreSQL: the connection pool, migrations under an advisory lock, and the unit of work that
writes state, outbox rows and consumed-event claims in one transaction."""
