#!/usr/bin/env bash
# Back up one PostgreSQL database (and the cluster's roles) with cairn, then
# apply retention. For cron or a systemd timer; see docs/sources.md.
#
#   PGDATABASE_URL=postgresql://backup@db.internal/app \
#   CAIRN_REPOS="/srv/backup/cairn s3://bucket/cairn" \
#   CAIRN_PASSWORD_FILE=/etc/cairn/passphrase \
#   examples/postgres-backup.sh
#
# PostgreSQL's password comes from ~/.pgpass or PGPASSFILE (or PGPASSWORD);
# cairn passes those to pg_dump, but never its own passphrase or backend
# credentials. The exit code is cairn's (docs/exit-codes.md): 0 ok, 1 the
# dump failed (no snapshot was saved), 4 a replica failed, …
set -euo pipefail

: "${PGDATABASE_URL:?set PGDATABASE_URL, e.g. postgresql://backup@db.internal/app}"
: "${CAIRN_REPOS:?set CAIRN_REPOS to the repository URLs, separated by spaces}"
CAIRN=${CAIRN:-cairn}
PG_DUMP=${PG_DUMP:-pg_dump}
PG_DUMPALL=${PG_DUMPALL:-pg_dumpall}
# The file name in the snapshot; restore with
#   cairn restore latest:/$NAME.dump --target DIR && pg_restore -d NEWDB DIR/$NAME.dump
# (`latest` is the newest snapshot of the repository, whatever its source:
# when other backups share it, take the id from `cairn snapshots --tag db:$NAME`.)
NAME=${NAME:-${PGDATABASE_URL##*/}}
NAME=${NAME%%\?*}

repos=()
for r in $CAIRN_REPOS; do repos+=(--repo "$r"); done

# Roles and tablespaces are not in a database dump; saved first, so the
# database's snapshot is `latest` afterwards. Skipped when the
# backup user may not read them (pg_dumpall needs a superuser for that).
if [[ ${WITH_GLOBALS:-1} == 1 ]]; then
    "$CAIRN" "${repos[@]}" backup --tag postgres --tag "db:$NAME" \
        --stdin-from-command --stdin-filename globals.sql \
        -- "$PG_DUMPALL" --globals-only --no-role-passwords --dbname "$PGDATABASE_URL"
fi

# One snapshot per dump. pg_dump runs directly (no pipe), so its exit
# status reaches cairn: a dump that fails halfway saves no snapshot.
# --compress=0: cairn compresses with zstd and deduplicates unchanged
# table data between days, which a compressed archive would defeat.
"$CAIRN" "${repos[@]}" backup --tag postgres --tag "db:$NAME" \
    --stdin-from-command --stdin-filename "$NAME.dump" \
    -- "$PG_DUMP" --format=custom --compress=0 --dbname "$PGDATABASE_URL"

# Retention: these rules for every replica. With per-replica policies in
# cairn.toml ([retention], [backends.NAME.retention]), set KEEP="" so
# forget applies those instead (docs/retention.md).
KEEP=${KEEP---keep-daily 7 --keep-weekly 4 --keep-monthly 12}
if [[ ${FORGET:-1} == 1 ]]; then
    # shellcheck disable=SC2086 # KEEP is a list of flags
    "$CAIRN" "${repos[@]}" forget --tag postgres $KEEP --prune
fi
