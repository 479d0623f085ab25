#!/bin/sh
# json vs jsonb for the event log's payload and metadata (issue 14), on the
# PostgreSQL at $PGHOST (default 127.0.0.1, user postgres): event-shaped
# rows (a 526-byte CreditsDeducted payload, 395-byte metadata, each row's
# text distinct so that every row is parsed), inserted 100 per statement,
# read back as text 1,000 per statement, as the projector reads the log.
# Five alternating rounds of 6 s each; prints statements/s per round.
set -eu
export PGHOST="${PGHOST:-127.0.0.1}" PGUSER="${PGUSER:-postgres}"
db=ledger_jsonbench
dir=$(mktemp -d)
trap 'rm -rf "$dir"; psql -qc "DROP DATABASE IF EXISTS $db" >/dev/null' EXIT
psql -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
for t in jsonb json; do
  psql -qd $db -c "CREATE TABLE ev_$t (position bigserial PRIMARY KEY, aggregate_id text NOT NULL, payload $t NOT NULL, metadata $t NOT NULL)"
done
P='{"CreditsDeducted":{"deduction_id":"01a25182-a765-7786-80bc-61d9c20dbd77","credits":15,"balance_after":985,"available_after":985,"usage":{"operation":"content_generation","units":1500,"cost_version":3,"cost_usd":"0.0123","model":"gpt-4o","tokens_input":1200,"tokens_output":800,"related_object_type":"article","related_object_id":"a-42","metadata":{"job":"j-1"}},"draws":[{"lot_id":"01a25182-a73c-715b-9aea-357eab0d78c4","credits":15,"expires_at":null}],"idempotency_key":"job-42","deducted_at":"2026-12-07T17:17:26.757774Z"}}'
M='{"event_id":"01a25182-a765-7786-80bc-61d9c20dbd78","recorded_at":"2026-12-07T17:17:26.757774Z","actor":{"sub":"bot-1","role":"system_bot"},"correlation_id":"01a25182-a765-7786-80bc-61d9c20dbd79","causation_id":null,"idempotency_key":"job-42","prev_hash":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","hash":"60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"}'
for t in jsonb json; do
  printf "INSERT INTO ev_$t (aggregate_id, payload, metadata) SELECT 'acct-' || g, replace('%s', 'j-1', 'j-' || g)::$t, replace('%s', 'job-42', 'job-' || g)::$t FROM generate_series(1,100) g;\n" "$P" "$M" > "$dir/ins_$t.sql"
  printf "SELECT CAST(payload AS text), CAST(metadata AS text) FROM ev_$t WHERE position > (random()*100000)::bigint ORDER BY position LIMIT 1000;\n" > "$dir/read_$t.sql"
  # 200,000 rows to read from.
  pgbench -n -f "$dir/ins_$t.sql" -t 1000 -c 2 -j 2 $db >/dev/null
done
psql -qd $db -c "VACUUM ANALYZE" >/dev/null
for round in 1 2 3 4 5; do
  for t in jsonb json; do
    i=$(pgbench -n -f "$dir/ins_$t.sql" -c 2 -j 2 -T 6 $db 2>&1 | awk '/^tps/ {print $3}')
    r=$(pgbench -n -f "$dir/read_$t.sql" -c 2 -j 2 -T 6 $db 2>&1 | awk '/^tps/ {print $3}')
    echo "$round $t insert_stmts_per_s=$i read_stmts_per_s=$r"
  done
done
