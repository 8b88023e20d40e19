//! Directory archives written as a stream, with nothing to seek back to:
//! tar (POSIX ustar, with a pax header for a path, link or size ustar
//! cannot hold) and zip (entries stored uncompressed, each followed by a
//! data descriptor with its CRC-32 and sizes, then the central
//! directory). Backup data is usually compressed already and the download
//! goes over loopback or a LAN, so storing keeps the server's CPU free;
//! zip is limited to what a zip without ZIP64 holds (4 GiB, 65 535
//! entries) and a larger directory is refused up front: use tar for it.
//! Only the framing is here: the caller sends the files' bytes between
//! [`Writer::begin`] and [`Writer::end`].

/// What one archive entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink(String),
}

/// One entry: its path inside the archive (relative, `/`-separated,
/// without a trailing `/`), its mode bits and time.
#[derive(Clone, Debug)]
pub struct Entry {
    pub path: String,
    pub kind: EntryKind,
    pub mode: u32,
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub mtime: i64,
    pub uid: u32,
    pub gid: u32,
}

/// The archive formats served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Tar,
    Zip,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Tar => "tar",
            Format::Zip => "zip",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Tar => "application/x-tar",
            Format::Zip => "application/zip",
        }
    }
}

/// The most a zip without ZIP64 can describe.
pub const ZIP_MAX_BYTES: u64 = 0xFFFF_FFFE;
pub const ZIP_MAX_ENTRIES: usize = 0xFFFE;

/// Why entries cannot be put in a zip.
pub fn zip_refusal(entries: &[Entry]) -> Option<String> {
    let total: u64 = entries
        .iter()
        .map(|e| e.size + 100 + 2 * e.path.len() as u64)
        .sum();
    if entries.len() > ZIP_MAX_ENTRIES {
        Some(format!(
            "{} entries are more than a zip holds ({ZIP_MAX_ENTRIES}): use format=tar",
            entries.len()
        ))
    } else if total > ZIP_MAX_BYTES {
        Some(format!(
            "{total} bytes are more than a zip holds (4 GiB): use format=tar"
        ))
    } else {
        None
    }
}

/// An archive being written: call `begin`, feed a file's bytes to
/// `data`, call `end`, for each entry; then `finish`. Each returns the
/// bytes to send.
pub struct Writer {
    format: Format,
    offset: u64,
    current: Option<Current>,
    central: Vec<u8>,
    count: usize,
}

struct Current {
    entry: Entry,
    header_offset: u64,
    crc: Crc32,
    written: u64,
}

impl Writer {
    pub fn new(format: Format) -> Writer {
        Writer {
            format,
            offset: 0,
            current: None,
            central: Vec::new(),
            count: 0,
        }
    }

    fn out(&mut self, v: Vec<u8>) -> Vec<u8> {
        self.offset += v.len() as u64;
        v
    }

    /// The header of `entry`.
    pub fn begin(&mut self, entry: Entry) -> Vec<u8> {
        let header = match self.format {
            Format::Tar => tar_header(&entry),
            Format::Zip => zip_local_header(&entry),
        };
        self.current = Some(Current {
            entry,
            header_offset: self.offset,
            crc: Crc32::new(),
            written: 0,
        });
        let mut head = self.out(header);
        if let Some(EntryKind::Symlink(target)) =
            self.current.as_ref().map(|c| c.entry.kind.clone())
        {
            if self.format == Format::Zip {
                // A zip symlink's data is its target.
                head.extend(self.data(target.as_bytes()));
            }
        }
        head
    }

    /// Bytes of the current file.
    pub fn data(&mut self, bytes: &[u8]) -> Vec<u8> {
        if let Some(c) = &mut self.current {
            c.crc.update(bytes);
            c.written += bytes.len() as u64;
        }
        self.out(bytes.to_vec())
    }

    /// The end of the current entry. A file that gave fewer bytes than its
    /// size said is padded with zeros in a tar (its header is sent).
    pub fn end(&mut self) -> Vec<u8> {
        let Some(c) = self.current.take() else {
            return Vec::new();
        };
        self.count += 1;
        let tail = match self.format {
            Format::Tar => {
                let size = if c.entry.kind == EntryKind::File {
                    c.entry.size
                } else {
                    0
                };
                let mut t = vec![0u8; size.saturating_sub(c.written) as usize];
                let padded = size.max(c.written);
                t.extend(std::iter::repeat_n(
                    0u8,
                    ((512 - padded % 512) % 512) as usize,
                ));
                t
            }
            Format::Zip => {
                let crc = c.crc.finish();
                let size = c.written as u32;
                let mut d = Vec::with_capacity(16);
                d.extend(0x0807_4b50u32.to_le_bytes());
                d.extend(crc.to_le_bytes());
                d.extend(size.to_le_bytes());
                d.extend(size.to_le_bytes());
                self.central.extend(zip_central_entry(
                    &c.entry,
                    crc,
                    size,
                    c.header_offset as u32,
                ));
                d
            }
        };
        self.out(tail)
    }

    /// The archive's end.
    pub fn finish(mut self) -> Vec<u8> {
        match self.format {
            Format::Tar => vec![0u8; 1024],
            Format::Zip => {
                let cd_offset = self.offset as u32;
                let mut v = std::mem::take(&mut self.central);
                let cd_size = v.len() as u32;
                let n = self.count as u16;
                v.extend(0x0605_4b50u32.to_le_bytes());
                v.extend([0u8; 4]);
                v.extend(n.to_le_bytes());
                v.extend(n.to_le_bytes());
                v.extend(cd_size.to_le_bytes());
                v.extend(cd_offset.to_le_bytes());
                v.extend([0u8; 2]);
                v
            }
        }
    }
}

fn octal(field: &mut [u8], v: u64) {
    let n = field.len() - 1;
    let s = format!("{v:0n$o}");
    let b = s.as_bytes();
    // Callers keep values within the field (a pax record holds a larger size).
    field[..n].copy_from_slice(&b[b.len() - n..]);
}

/// One pax record: `LEN key=value\n`, LEN counting itself.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}").len() + body.len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

/// The fields of one ustar header besides its name, link and size.
struct Owner {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

fn ustar_block(o: &Owner, name: &[u8], size: u64, flag: u8, link: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], u64::from(o.mode & 0o7777));
    octal(&mut h[108..116], u64::from(o.uid).min(0o7777777));
    octal(&mut h[116..124], u64::from(o.gid).min(0o7777777));
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], o.mtime.clamp(0, 0o77777777777) as u64);
    h[156] = flag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// Names that fit a ustar header field (ASCII-only is not required, but
/// the length is in bytes).
fn fits(s: &str, n: usize) -> bool {
    s.len() < n
}

fn tar_header(e: &Entry) -> Vec<u8> {
    let mut name = e.path.clone();
    if e.kind == EntryKind::Dir {
        name.push('/');
    }
    let (flag, link, size) = match &e.kind {
        EntryKind::Dir => (b'5', String::new(), 0),
        EntryKind::File => (b'0', String::new(), e.size),
        EntryKind::Symlink(t) => (b'2', t.clone(), 0),
    };
    let mut out = Vec::new();
    let mut pax = Vec::new();
    if !fits(&name, 100) {
        pax.extend(pax_record("path", &name));
    }
    if !fits(&link, 100) {
        pax.extend(pax_record("linkpath", &link));
    }
    if size > 0o77777777777 {
        pax.extend(pax_record("size", &size.to_string()));
    }
    if !pax.is_empty() {
        let pax_len = pax.len() as u64;
        let root = Owner {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: e.mtime,
        };
        out.extend(ustar_block(&root, b"PaxHeader", pax_len, b'x', b""));
        out.extend(&pax);
        out.extend(std::iter::repeat_n(
            0u8,
            ((512 - pax_len % 512) % 512) as usize,
        ));
    }
    let short = |s: &str| -> Vec<u8> {
        if fits(s, 100) {
            s.as_bytes().to_vec()
        } else {
            // The pax record holds it; the ustar field gets a prefix of it
            // cut at a character boundary.
            let mut end = 99;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.as_bytes()[..end].to_vec()
        }
    };
    let size_field = if size > 0o77777777777 { 0 } else { size };
    let owner = Owner {
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        mtime: e.mtime,
    };
    out.extend(ustar_block(
        &owner,
        &short(&name),
        size_field,
        flag,
        &short(&link),
    ));
    out
}

/// MS-DOS time and date of a Unix time (UTC; 1980 at the earliest).
fn dos_time(secs: i64) -> (u16, u16) {
    let t =
        jiff::Timestamp::from_second(secs.max(315_532_800)).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let d = t.to_zoned(jiff::tz::TimeZone::UTC).datetime();
    let time = ((d.hour() as u16) << 11) | ((d.minute() as u16) << 5) | (d.second() as u16 / 2);
    let date = (((d.year() - 1980).clamp(0, 127) as u16) << 9)
        | ((d.month() as u16) << 5)
        | d.day() as u16;
    (time, date)
}

fn zip_name(e: &Entry) -> String {
    match e.kind {
        EntryKind::Dir => format!("{}/", e.path),
        _ => e.path.clone(),
    }
}

/// Flags: sizes and CRC in a data descriptor (bit 3), names in UTF-8 (bit 11).
const ZIP_FLAGS: u16 = 0x0808;

fn zip_local_header(e: &Entry) -> Vec<u8> {
    let name = zip_name(e);
    let (time, date) = dos_time(e.mtime);
    let mut v = Vec::with_capacity(30 + name.len());
    v.extend(0x0403_4b50u32.to_le_bytes());
    v.extend(20u16.to_le_bytes());
    v.extend(ZIP_FLAGS.to_le_bytes());
    v.extend(0u16.to_le_bytes()); // stored
    v.extend(time.to_le_bytes());
    v.extend(date.to_le_bytes());
    v.extend([0u8; 12]); // CRC and sizes: in the data descriptor
    v.extend((name.len() as u16).to_le_bytes());
    v.extend(0u16.to_le_bytes());
    v.extend(name.as_bytes());
    v
}

fn zip_central_entry(e: &Entry, crc: u32, size: u32, offset: u32) -> Vec<u8> {
    let name = zip_name(e);
    let (time, date) = dos_time(e.mtime);
    let file_type: u32 = match e.kind {
        EntryKind::Dir => 0o040000,
        EntryKind::File => 0o100000,
        EntryKind::Symlink(_) => 0o120000,
    };
    let dos_dir = if e.kind == EntryKind::Dir { 0x10 } else { 0 };
    let attrs = ((file_type | (e.mode & 0o7777)) << 16) | dos_dir;
    let mut v = Vec::with_capacity(46 + name.len());
    v.extend(0x0201_4b50u32.to_le_bytes());
    v.extend((3u16 << 8 | 20).to_le_bytes()); // made on Unix, zip 2.0
    v.extend(20u16.to_le_bytes());
    v.extend(ZIP_FLAGS.to_le_bytes());
    v.extend(0u16.to_le_bytes());
    v.extend(time.to_le_bytes());
    v.extend(date.to_le_bytes());
    v.extend(crc.to_le_bytes());
    v.extend(size.to_le_bytes());
    v.extend(size.to_le_bytes());
    v.extend((name.len() as u16).to_le_bytes());
    v.extend([0u8; 8]); // extra, comment, disk, internal attributes
    v.extend(attrs.to_le_bytes());
    v.extend(offset.to_le_bytes());
    v.extend(name.as_bytes());
    v
}

/// CRC-32 (IEEE, reflected), as zip uses it.
struct Crc32(u32);

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC_TABLE: [u32; 256] = crc_table();

impl Crc32 {
    fn new() -> Crc32 {
        Crc32(0xFFFF_FFFF)
    }
    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = CRC_TABLE[((self.0 ^ u32::from(b)) & 0xFF) as usize] ^ (self.0 >> 8);
        }
    }
    fn finish(&self) -> u32 {
        !self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_of_the_check_string() {
        let mut c = Crc32::new();
        c.update(b"123456789");
        assert_eq!(c.finish(), 0xCBF4_3926);
    }

    #[test]
    fn pax_records_count_their_own_length() {
        let r = pax_record("path", &"x".repeat(95));
        let text = String::from_utf8(r.clone()).unwrap();
        let len: usize = text.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(len, r.len());
    }

    #[test]
    fn tar_headers_are_blocks_with_a_good_checksum() {
        let e = Entry {
            path: "a/b.txt".into(),
            kind: EntryKind::File,
            mode: 0o644,
            size: 3,
            mtime: 1_800_000_000,
            uid: 1000,
            gid: 1000,
        };
        let mut w = Writer::new(Format::Tar);
        let mut all = w.begin(e);
        all.extend(w.data(b"abc"));
        all.extend(w.end());
        all.extend(w.finish());
        assert_eq!(all.len(), 512 + 512 + 1024);
        let h = &all[..512];
        let mut sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        sum -= h[148..156].iter().map(|&b| u32::from(b)).sum::<u32>();
        sum += 8 * u32::from(b' ');
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        assert_eq!(sum, stored);
        assert_eq!(&all[512..515], b"abc");
    }
}
