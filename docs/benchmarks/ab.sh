#!/usr/bin/env bash
# A/B of cairn binaries (builds of different commits or settings): first
# backup and restore of one dataset, interleaved, under /usr/bin/time.
# Restores go to /var/tmp/rfs, which should be a fresh journaled ext4
# (loop-mounted image), as in run.sh.
# usage: ab.sh DATASET REPS BIN...   (env: AB_DIR, RESTORE_DIR)
set -euo pipefail
DS=$1; REPS=$2; shift 2
export CAIRN_PASSWORD=bench HOME=${AB_DIR:-/var/tmp/ab}/home
mkdir -p $HOME
W=${AB_DIR:-/var/tmp/ab}; mkdir -p $W
RFS=${RESTORE_DIR:-/var/tmp/rfs}
printf "%-6s %-8s %8s %8s %8s %8s %10s %10s\n" bin step wall user sys rssMiB minflt majflt
for r in $(seq $REPS); do
for b in "$@"; do
  name=$(basename $b)
  repo=$W/repo-$name; rm -rf $repo
  $b -r $repo init --kdf-memory-kib 8192 --kdf-iterations 1 >/dev/null 2>&1
  sync; 
  /usr/bin/time -f "%e %U %S %M %R %F" -o $W/t $b -r $repo --quiet backup $DS >/dev/null 2>$W/err || { cat $W/err; }
  read e u s m mi ma < $W/t; printf "%-6s %-8s %8s %8s %8s %8.1f %10s %10s\n" $name backup $e $u $s $(echo "$m/1024"|bc -l) $mi $ma
  rm -rf $RFS/out; sync
  /usr/bin/time -f "%e %U %S %M %R %F" -o $W/t $b -r $repo --quiet restore latest --target $RFS/out >/dev/null 2>$W/err || { cat $W/err; }
  read e u s m mi ma < $W/t; printf "%-6s %-8s %8s %8s %8s %8.1f %10s %10s\n" $name restore $e $u $s $(echo "$m/1024"|bc -l) $mi $ma
  rm -rf $RFS/out $repo
done; done
