#!/usr/bin/env bash
# Deterministic benchmark datasets for cairn vs restic vs borg.
#
#   make-dataset.sh mixed      DIR   # ~SIZE_MB MB (10^6 B, default 1000): source trees, small files,
#                                    # compressed blobs, binaries and one large "vm.img" (~25%)
#   make-dataset.sh many-small DIR   # FILES files (default 200000) of 1-8 KiB in a nested tree
#   make-dataset.sh one-big    DIR   # one file of SIZE_MB MB made of tagged 1 MiB blocks
#   make-dataset.sh mutate     DIR   # change ~1% of files, append ~1% to the big file,
#                                    # 16 in-place 4 KiB overwrites; originals kept in DIR.undo
#   make-dataset.sh unmutate   DIR   # undo the last mutate exactly (byte for byte)
#   make-dataset.sh digest     DIR   # print "files=N bytes=B digest=HEX" (manifest of path+content)
#
# Generation writes DIR.manifest (one "hash  ./path" line per file, sorted) and prints the
# manifest digest last. Same SEED + same machine image => same digest. Real files (python
# stdlib, /usr/include, /usr/share/doc, shared libraries, ...) are copied in sorted order up to a
# byte budget, so the digest changes if those packages change; the synthetic parts (small files,
# blobs, the large file's random blocks) depend on SEED only. No network is used.
#
# Environment: SEED (default 20240601), SIZE_MB (default 1000), FILES (default 200000),
# SRC_DIRS / BIN_DIRS (colon-separated overrides of the copied trees), PYTHON (default
# /usr/bin/python3 if present).
set -euo pipefail

usage() {
	sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
}

[[ $# -eq 2 ]] || usage
KIND=$1
DIR=${2%/}
[[ -n $DIR ]] || usage

export SEED=${SEED:-20240601}
export SIZE_MB=${SIZE_MB:-1000}
export FILES=${FILES:-200000}

if [[ -n ${PYTHON:-} ]]; then
	PY=$PYTHON
elif [[ -x /usr/bin/python3 ]]; then
	PY=/usr/bin/python3
else
	PY=$(command -v python3) || {
		echo "make-dataset.sh: python3 is required" >&2
		exit 1
	}
fi

if command -v b3sum >/dev/null 2>&1; then
	HASHER=b3sum
	HASH_NAME=BLAKE3
else
	HASHER=sha256sum
	HASH_NAME=SHA-256
fi

# manifest DIR OUT: one "hash  ./relpath" line per regular file, sorted bytewise by path.
manifest() {
	local dir=$1 out=$2
	(cd "$dir" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r "$HASHER") >"$out"
}

# digest DIR: prints "files=N bytes=B digest=HEX algo=NAME"
digest() {
	local dir=$1 tmp files bytes sum
	tmp=$(mktemp)
	manifest "$dir" "$tmp"
	files=$(wc -l <"$tmp")
	bytes=$(find "$dir" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%d", s }')
	sum=$("$HASHER" <"$tmp" | cut -d' ' -f1)
	rm -f "$tmp"
	echo "files=$files bytes=$bytes digest=$sum algo=$HASH_NAME"
}

run_py() {
	"$PY" - "$@" <<'PYEOF'
import hashlib
import json
import os
import random
import shutil
import sys
import sysconfig

KIB = 1024
MIB = 1024 * 1024
SEED = os.environ["SEED"]
mode, dest = sys.argv[1], sys.argv[2]


def rng(*parts):
    # random.Random(str) seeds from SHA-512 of the string: stable across Python 3 versions,
    # and randbytes() is getrandbits()-based, so the streams are reproducible.
    return random.Random(":".join((SEED,) + tuple(str(p) for p in parts)))


def walk_sorted(root):
    """Yield (abs_path, rel_path, size) of regular files under root, bytewise-sorted, no symlinks."""
    def visit(rel):
        path = os.path.join(root, rel) if rel else root
        try:
            entries = sorted(os.scandir(path), key=lambda e: os.fsencode(e.name))
        except OSError:
            return
        for e in entries:
            r = os.path.join(rel, e.name) if rel else e.name
            try:
                if e.is_symlink():
                    continue
                if e.is_dir(follow_symlinks=False):
                    if e.name == "__pycache__":
                        continue
                    yield from visit(r)
                elif e.is_file(follow_symlinks=False):
                    if e.name.endswith((".pyc", ".pyo")):
                        continue
                    yield e.path, r, e.stat(follow_symlinks=False).st_size
            except OSError:
                continue

    if os.path.isdir(root):
        yield from visit("")


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def label_of(root):
    return root.strip("/").replace("/", "_") or "root"


def copy_trees(roots, dest_sub, budget, max_file, label=None):
    """Copy files from roots (in order, each sorted) until budget bytes are used. Returns bytes copied."""
    left = budget
    for root in roots:
        if left < 64 * KIB:
            break
        lab = label or label_of(root)
        for src, rel, size in walk_sorted(root):
            if left < 64 * KIB:
                break
            if size > max_file or size > left:
                continue
            try:
                with open(src, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if len(data) != size:
                continue
            write(os.path.join(dest_sub, lab, rel), data)
            left -= size
    return budget - left


def stdlib_dir():
    return sysconfig.get_paths()["stdlib"]


def default_src_dirs():
    dirs = [stdlib_dir(), "/usr/include", "/usr/share/doc", "/usr/lib/python3/dist-packages",
            "/usr/share/perl", "/usr/share/perl5", "/usr/share/vim", "/usr/share/i18n"]
    rustup = os.environ.get("RUSTUP_HOME", os.path.expanduser("~/.rustup"))
    tc = os.path.join(rustup, "toolchains")
    if os.path.isdir(tc):
        for name in sorted(os.listdir(tc)):
            d = os.path.join(tc, name, "share", "doc")
            if os.path.isdir(d):
                dirs.append(d)
                break
    return dirs


def default_bin_dirs():
    return ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/bin", "/usr/sbin",
            "/usr/libexec", "/usr/lib/jvm", "/usr/lib/llvm-14", "/usr/lib/llvm-15"]


def dirs_from_env(name, default):
    v = os.environ.get(name)
    return [d for d in v.split(":") if d] if v else default


_pools = {}


def pool(kind):
    """Deterministic ~16-32 MiB pools of real text / ELF bytes to cut blocks from."""
    if kind in _pools:
        return _pools[kind]
    chunks, total = [], 0
    if kind == "text":
        limit, roots, ok = 16 * MIB, [stdlib_dir(), "/usr/include", "/usr/share/doc"], \
            (lambda p: p.endswith((".py", ".h", ".txt", ".rst", ".c", ".md", ".html")))
    else:
        limit, roots, ok = 32 * MIB, ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/bin"], \
            (lambda p: ".so" in os.path.basename(p) or p.startswith("/usr/bin/"))
    for root in roots:
        for src, _rel, size in walk_sorted(root):
            if total >= limit:
                break
            if not ok(src) or size < 4 * KIB or size > 8 * MIB:
                continue
            try:
                with open(src, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if kind == "elf" and not data.startswith(b"\x7fELF"):
                continue
            chunks.append(data)
            total += len(data)
    data = b"".join(chunks)[:limit]
    if len(data) < 2 * MIB:
        # Fallback for a bare machine: synthetic words (text) or random bytes (elf).
        r = rng("pool-fallback", kind)
        if kind == "text":
            words = [b"".join(bytes([97 + r.randrange(26)]) for _ in range(r.randint(2, 10)))
                     for _ in range(4000)]
            out = bytearray()
            while len(out) < 4 * MIB:
                line = b" ".join(r.choice(words) for _ in range(r.randint(3, 14)))
                out += line + (b".\n" if r.random() < 0.3 else b"\n")
            data = bytes(out)
        else:
            data = b"\x7fELF" + r.randbytes(4 * MIB)
    _pools[kind] = data
    return data


def slice_of(kind, r, n):
    p = pool(kind)
    if n >= len(p):
        return (p * (n // len(p) + 1))[:n]
    off = r.randrange(len(p) - n)
    return p[off:off + n]


def tag(name, blk, k):
    # 16 bytes, unique per (file, block, 4 KiB slot): defeats dedup of repeated pool slices.
    return b"<" + hashlib.blake2b(f"{SEED}:{name}:{blk}:{k}".encode(), digest_size=7).hexdigest().encode() + b">"


def big_block(name, blk):
    """1 MiB block: ~45% text, 30% random, 15% ELF, 10% zeros; a unique tag every 4 KiB."""
    r = rng("big", name, blk)
    x = r.random()
    if x < 0.45:
        b = bytearray(slice_of("text", r, MIB))
    elif x < 0.75:
        b = bytearray(r.randbytes(MIB))
    elif x < 0.90:
        b = bytearray(slice_of("elf", r, MIB))
    else:
        b = bytearray(MIB)
    for k in range(MIB // (4 * KIB)):
        o = k * 4 * KIB
        b[o:o + 16] = tag(name, blk, k)
    return bytes(b)


def write_big(path, nblocks, name):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        for blk in range(nblocks):
            f.write(big_block(name, blk))


def small_file(prefix, i):
    r = rng("small", prefix, i)
    size = r.randint(1 * KIB, 8 * KIB)
    head = f"# {prefix} file {i}\n".encode()
    n = max(0, size - len(head))
    x = r.random()
    if x < 0.60:
        return "txt", head + slice_of("text", r, n)
    if x < 0.85:
        return "bin", head + r.randbytes(n)
    h = n // 2
    return "dat", head + slice_of("text", r, h) + r.randbytes(n - h)


def write_small(root, prefix, count=None, budget=None):
    i = total = 0
    while (count is not None and i < count) or (budget is not None and total < budget):
        ext, data = small_file(prefix, i)
        write(os.path.join(root, f"d{i // 10000:03d}", f"d{(i // 100) % 100:02d}", f"f{i:07d}.{ext}"), data)
        total += len(data)
        i += 1
    return i, total


MEDIA = [(".jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00"), (".png", b"\x89PNG\r\n\x1a\n"),
         (".mp4", b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00"), (".zst", b"\x28\xb5\x2f\xfd"),
         (".gz", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"), (".xz", b"\xfd7zXZ\x00")]


def write_media(root, budget):
    i = total = 0
    while total < budget:
        r = rng("media", i)
        size = int(2 ** r.uniform(18, 24))  # 256 KiB .. 16 MiB, log-uniform
        size = min(size, max(64 * KIB, budget - total))
        ext, magic = MEDIA[i % len(MEDIA)]
        write(os.path.join(root, f"blob{i:04d}{ext}"), magic + r.randbytes(size - len(magic)))
        total += size
        i += 1
    return i, total


def fill_text(root, budget):
    """Synthetic text files to make up for a shortfall of real source trees."""
    i = total = 0
    while total < budget:
        r = rng("fill", i)
        size = min(r.randint(16 * KIB, 512 * KIB), max(4 * KIB, budget - total))
        b = bytearray(slice_of("text", r, size))
        for k in range(0, size, 4 * KIB):
            b[k:k + 16] = tag("fill", i, k)[: len(b[k:k + 16])]
        write(os.path.join(root, f"d{i // 100:03d}", f"fill{i:05d}.txt"), bytes(b))
        total += size
        i += 1
    return total


def gen_mixed(dest):
    budget = int(float(os.environ["SIZE_MB"]) * 1_000_000)
    nbig = max(1, round(budget * 0.25 / MIB))
    src_budget = int(budget * 0.35)
    got = copy_trees(dirs_from_env("SRC_DIRS", default_src_dirs()), os.path.join(dest, "src"),
                     src_budget, max(MIB, budget // 40))
    if src_budget - got > 64 * KIB:
        fill_text(os.path.join(dest, "src", "zz-synthetic"), src_budget - got)
        print(f"  src: copied {got} B of real trees, filled {src_budget - got} B synthetic", file=sys.stderr)
    # dup: a vendored copy of the start of src (cross-file dedup opportunity)
    copy_trees([os.path.join(dest, "src")], os.path.join(dest, "dup"), int(budget * 0.05), MIB, "vendor")
    write_small(os.path.join(dest, "small"), "mixed", budget=int(budget * 0.05))
    write_media(os.path.join(dest, "media"), int(budget * 0.10))
    got = copy_trees(dirs_from_env("BIN_DIRS", default_bin_dirs()), os.path.join(dest, "bin"),
                     int(budget * 0.20), max(MIB, budget // 20))
    if got < budget * 0.20 - 64 * KIB:
        print(f"  bin: only {got} B of binaries found", file=sys.stderr)
    write_big(os.path.join(dest, "big", "vm.img"), nbig, "vm.img")


def gen_many_small(dest):
    write_small(dest, "many", count=int(os.environ["FILES"]))


def gen_one_big(dest):
    n = max(1, round(float(os.environ["SIZE_MB"]) * 1_000_000 / MIB))
    write_big(os.path.join(dest, "one-big.img"), n, "one-big.img")


# ---------------------------------------------------------------- mutate / unmutate

def all_files(root):
    return [(p, rel, size) for p, rel, size in walk_sorted(root)]


def find_big(root):
    for cand in ("big/vm.img", "one-big.img"):
        if os.path.isfile(os.path.join(root, cand)):
            return cand
    return None


def selected(rel):
    h = hashlib.blake2b(f"{SEED}:mutate:{rel}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") % 100 == 0


def mutate(root):
    undo = root + ".undo"
    if os.path.exists(undo):
        sys.exit(f"{undo} exists: already mutated (run unmutate first)")
    big = find_big(root)
    plan = {"files": [], "big": None}
    files = [rel for _p, rel, _s in all_files(root) if rel != big and selected(rel)]
    # 1. save originals (nothing is modified until the undo record is complete)
    for rel in files:
        dst = os.path.join(undo, "files", rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(os.path.join(root, rel), dst)
        plan["files"].append(rel)
    if big:
        path = os.path.join(root, big)
        size = os.path.getsize(path)
        r = rng("mutate-big")
        nslots = size // (4 * KIB)
        offs = sorted(set(r.randrange(nslots) * 4 * KIB for _ in range(16))) if nslots else []
        os.makedirs(os.path.join(undo, "blocks"), exist_ok=True)
        with open(path, "rb") as f:
            for n, o in enumerate(offs):
                f.seek(o)
                write(os.path.join(undo, "blocks", str(n)), f.read(4 * KIB))
        plan["big"] = {"rel": big, "size": size, "offsets": offs}
    with open(os.path.join(undo, "plan.json"), "w") as f:
        json.dump(plan, f)
    # 2. mutate
    for rel in files:
        p = os.path.join(root, rel)
        with open(p, "rb") as f:
            data = bytearray(f.read())
        r = rng("mutate-file", rel)
        if len(data) >= 32:
            o = r.randrange(len(data) - 16)
            data[o:o + 16] = r.randbytes(16)
        data += f"\n# mutated {SEED}\n".encode()
        with open(p, "wb") as f:
            f.write(data)
    appended = 0
    if big:
        b = plan["big"]
        r = rng("mutate-big-data")
        with open(os.path.join(root, b["rel"]), "r+b") as f:
            for o in b["offsets"]:
                f.seek(o)
                f.write(r.randbytes(4 * KIB))
            f.seek(0, 2)
            want = -(-b["size"] // 100 // (4 * KIB)) * 4 * KIB  # ~1%, rounded up to 4 KiB
            blk = 0
            while appended < want:
                d = big_block("append", blk)[: want - appended]
                f.write(d)
                appended += len(d)
                blk += 1
    with open(os.path.join(undo, "complete"), "w") as f:
        f.write("ok\n")
    msg = f"mutated {len(files)} files"
    if big:
        msg += f"; {big}: +{appended} B appended, {len(plan['big']['offsets'])} x 4 KiB overwritten"
    print(msg, file=sys.stderr)


def unmutate(root):
    undo = root + ".undo"
    if not os.path.exists(undo):
        sys.exit(f"{undo} does not exist: nothing to undo")
    if not os.path.exists(os.path.join(undo, "plan.json")):
        shutil.rmtree(undo)  # interrupted while saving originals: nothing was modified yet
        return
    with open(os.path.join(undo, "plan.json")) as f:
        plan = json.load(f)
    for rel in plan["files"]:
        shutil.copyfile(os.path.join(undo, "files", rel), os.path.join(root, rel))
    b = plan["big"]
    if b:
        with open(os.path.join(root, b["rel"]), "r+b") as f:
            f.truncate(b["size"])
            for n, o in enumerate(b["offsets"]):
                with open(os.path.join(undo, "blocks", str(n)), "rb") as g:
                    f.seek(o)
                    f.write(g.read())
    shutil.rmtree(undo)
    print(f"unmutated {len(plan['files'])} files" + (" and the big file" if b else ""), file=sys.stderr)


{"mixed": gen_mixed, "many-small": gen_many_small, "one-big": gen_one_big,
 "mutate": mutate, "unmutate": unmutate}[mode](dest)
PYEOF
}

case $KIND in
mixed | many-small | one-big)
	if [[ -e $DIR ]] && [[ -n $(ls -A "$DIR" 2>/dev/null) ]]; then
		echo "make-dataset.sh: $DIR exists and is not empty; remove it first" >&2
		exit 1
	fi
	mkdir -p "$DIR"
	DIR=$(cd "$DIR" && pwd)
	start=$(date +%s)
	echo "generating $KIND into $DIR (SEED=$SEED SIZE_MB=$SIZE_MB FILES=$FILES)" >&2
	run_py "$KIND" "$DIR"
	manifest "$DIR" "$DIR.manifest"
	result=$(digest "$DIR")
	echo "generated $KIND in $(($(date +%s) - start)) s" >&2
	echo "$result"
	;;
mutate | unmutate)
	[[ -d $DIR ]] || {
		echo "make-dataset.sh: no such directory: $DIR" >&2
		exit 1
	}
	DIR=$(cd "$DIR" && pwd)
	run_py "$KIND" "$DIR"
	digest "$DIR"
	;;
digest)
	digest "$DIR"
	;;
*)
	usage
	;;
esac
