"""The journal's statements; the supersede rule (docs/journal.md) is the ORDER BY of RECORD."""

RECORD = """
WITH fresh AS (
    INSERT INTO journal_outcomes (event_id, request_event_id) VALUES ($2, $1)
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id)
INSERT INTO journal_results AS r (
    request_event_id, outcome_event_id, status, operation, operands, result, reason, detail,
    attempts, correlation_id, processed_by, outcome_at, first_outcome_at, last_outcome_at,
    outcomes, failures)
SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $12, 1,
       CASE WHEN $3 = 'failed' THEN 1 ELSE 0 END
FROM fresh
ON CONFLICT (request_event_id) DO UPDATE SET
    outcomes = r.outcomes + 1,
    failures = r.failures + excluded.failures,
    first_outcome_at = least(r.first_outcome_at, excluded.first_outcome_at),
    last_outcome_at = greatest(r.last_outcome_at, excluded.last_outcome_at),
    updated_at = now(),
    (outcome_event_id, status, operation, operands, result, reason, detail, attempts,
     correlation_id, processed_by, outcome_at) = (
        SELECT s.* FROM (VALUES
            (r.outcome_event_id, r.status, r.operation, r.operands, r.result, r.reason, r.detail,
             r.attempts, r.correlation_id, r.processed_by, r.outcome_at),
            (excluded.outcome_event_id, excluded.status, excluded.operation, excluded.operands,
             excluded.result, excluded.reason, excluded.detail, excluded.attempts,
             excluded.correlation_id, excluded.processed_by, excluded.outcome_at))
            AS s (outcome_event_id, status, operation, operands, result, reason, detail, attempts,
                  correlation_id, processed_by, outcome_at)
        -- the supersede rule: a completion above any failure; the first completion, the last failure
        ORDER BY s.status = 'completed' DESC,
                 CASE WHEN s.status = 'completed' THEN s.outcome_at END ASC,
                 CASE WHEN s.status = 'failed' THEN s.outcome_at END DESC,
                 s.outcome_event_id
        LIMIT 1)
RETURNING r.request_event_id, r.outcomes
"""
"""One outcome event ($1 request_event_id, $2 event_id, ...): a new event of a new request makes
its row, of a known request updates it; an event seen before (a redelivery) changes nothing and
returns nothing."""

COLUMNS = """request_event_id, status, operation, operands, result, reason, detail, attempts,
    correlation_id, processed_by, outcome_event_id, outcome_at, first_outcome_at, last_outcome_at,
    outcomes, failures, recorded_at, updated_at"""

BY_ID = f"""
SELECT {COLUMNS} FROM journal_results WHERE request_event_id = $1
UNION ALL
SELECT {COLUMNS} FROM journal_results WHERE correlation_id = $1 AND request_event_id <> $1
ORDER BY first_outcome_at
LIMIT $2
"""

TOTALS = """
SELECT count(*) AS requests, coalesce(sum(outcomes), 0) AS outcomes,
       coalesce(sum(outcomes - 1), 0) AS duplicates,
       count(*) FILTER (WHERE outcomes > 1) AS duplicated_requests,
       count(*) FILTER (WHERE failures > 0 AND status = 'completed') AS completed_after_failure,
       min(first_outcome_at) AS first_outcome_at, max(last_outcome_at) AS last_outcome_at
FROM journal_results
"""

BY_STATUS = "SELECT status, count(*) FROM journal_results GROUP BY status ORDER BY status"
BY_REASON = ("SELECT reason, count(*) FROM journal_results WHERE status = 'failed' "
             "GROUP BY reason ORDER BY reason")
BY_OPERATION = "SELECT operation, count(*) FROM journal_results GROUP BY operation ORDER BY operation"
