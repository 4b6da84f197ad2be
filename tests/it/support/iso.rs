//! Builds small, valid ISO 9660 images in memory for tests (no external
//! tools): system area, Primary Volume Descriptor (`CD001`) at sector 16,
//! an optional El Torito boot record with a boot catalog, the descriptor
//! set terminator, path tables, the root directory and the files.

pub(crate) const SECTOR: usize = 2048;

/// An ISO 9660 image under construction.
#[derive(Clone, Debug)]
pub(crate) struct IsoBuilder {
    volume_id: String,
    files: Vec<(String, Vec<u8>)>,
    bootable: bool,
}

/// A non-bootable image with one `README.TXT` (the usual data image).
pub(crate) fn data_iso(volume_id: &str, content: &[u8]) -> Vec<u8> {
    IsoBuilder::new(volume_id)
        .file("README.TXT", content)
        .build()
}

impl IsoBuilder {
    /// `volume_id`: up to 32 characters of A-Z, 0-9 and `_` (d-characters).
    pub(crate) fn new(volume_id: &str) -> Self {
        Self {
            volume_id: volume_id.to_string(),
            files: Vec::new(),
            bootable: false,
        }
    }

    /// Adds a file in the root directory; `name` is `NAME.EXT` in
    /// d-characters (the `;1` version suffix is added).
    pub(crate) fn file(mut self, name: &str, data: &[u8]) -> Self {
        self.files.push((name.to_ascii_uppercase(), data.to_vec()));
        self
    }

    /// Adds an El Torito boot record (sector 17), a boot catalog and a
    /// one-sector no-emulation boot image: the image is then "bootable".
    pub(crate) fn bootable(mut self, bootable: bool) -> Self {
        self.bootable = bootable;
        self
    }

    pub(crate) fn build(&self) -> Vec<u8> {
        // ISO 9660 wants directory records sorted by identifier.
        let mut files = self.files.clone();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        // Sector plan: 16 system area, PVD, [boot record], terminator,
        // L path table, M path table, root directory, [catalog, boot
        // image], file data.
        let mut next = 16;
        let pvd = next;
        next += 1;
        let boot_record = self.bootable.then(|| {
            next += 1;
            next - 1
        });
        let terminator = next;
        next += 1;
        let l_path = next;
        let m_path = next + 1;
        let root_dir = next + 2;
        next += 3;
        let catalog_and_image = self.bootable.then(|| {
            next += 2;
            (next - 2, next - 1)
        });
        let mut file_extents = Vec::new();
        for (_, data) in &files {
            file_extents.push(next);
            next += data.len().div_ceil(SECTOR).max(1);
        }
        let total_sectors = next;
        let mut iso = vec![0u8; total_sectors * SECTOR];

        // Root directory: ".", "..", then the files.
        let mut dir = Vec::new();
        dir.extend(dir_record(root_dir, SECTOR, true, &[0]));
        dir.extend(dir_record(root_dir, SECTOR, true, &[1]));
        for ((name, data), extent) in files.iter().zip(&file_extents) {
            dir.extend(dir_record(
                *extent,
                data.len(),
                false,
                format!("{name};1").as_bytes(),
            ));
        }
        assert!(
            dir.len() <= SECTOR,
            "too many files for a one-sector root directory"
        );
        put(&mut iso, root_dir * SECTOR, &dir);

        // Path tables: the root only.
        let path_entry = |big_endian: bool| {
            let mut e = vec![1u8, 0];
            let extent = u32::try_from(root_dir).unwrap_or(u32::MAX);
            e.extend(if big_endian {
                extent.to_be_bytes()
            } else {
                extent.to_le_bytes()
            });
            e.extend(if big_endian {
                1u16.to_be_bytes()
            } else {
                1u16.to_le_bytes()
            });
            e.extend([0u8, 0]); // identifier 0x00 + padding
            e
        };
        let path_table = path_entry(false);
        put(&mut iso, l_path * SECTOR, &path_table);
        put(&mut iso, m_path * SECTOR, &path_entry(true));

        // Primary Volume Descriptor.
        let p = pvd * SECTOR;
        iso[p] = 1;
        put(&mut iso, p + 1, b"CD001");
        iso[p + 6] = 1;
        put(&mut iso, p + 8, &padded(b"LINUX", 32));
        put(&mut iso, p + 40, &padded(self.volume_id.as_bytes(), 32));
        put(&mut iso, p + 80, &both32(total_sectors));
        put(&mut iso, p + 120, &both16(1));
        put(&mut iso, p + 124, &both16(1));
        put(&mut iso, p + 128, &both16(SECTOR));
        put(&mut iso, p + 132, &both32(path_table.len()));
        put(&mut iso, p + 140, &(l_path as u32).to_le_bytes());
        put(&mut iso, p + 148, &(m_path as u32).to_be_bytes());
        put(&mut iso, p + 156, &dir_record(root_dir, SECTOR, true, &[0]));
        for (offset, len) in [
            (190, 128),
            (318, 128),
            (446, 128),
            (574, 128),
            (702, 37),
            (739, 37),
            (776, 37),
        ] {
            put(&mut iso, p + offset, &vec![b' '; len]);
        }
        for offset in [813, 830, 847, 864] {
            let mut date = [b'0'; 17];
            date[16] = 0;
            put(&mut iso, p + offset, &date);
        }
        put(&mut iso, p + 813, b"2024010100000000");
        put(&mut iso, p + 830, b"2024010100000000");
        iso[p + 881] = 1;

        // El Torito boot record + catalog + boot image.
        if let (Some(br), Some((catalog, boot_image))) = (boot_record, catalog_and_image) {
            let b = br * SECTOR;
            iso[b] = 0;
            put(&mut iso, b + 1, b"CD001");
            iso[b + 6] = 1;
            put(
                &mut iso,
                b + 7,
                &padded_zero(b"EL TORITO SPECIFICATION", 32),
            );
            put(&mut iso, b + 71, &(catalog as u32).to_le_bytes());
            let c = catalog * SECTOR;
            let mut validation = [0u8; 32];
            validation[0] = 1; // header id
            validation[0x1e] = 0x55;
            validation[0x1f] = 0xAA;
            let sum = validation.chunks(2).fold(0u16, |acc, w| {
                acc.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
            });
            validation[0x1c..0x1e].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
            put(&mut iso, c, &validation);
            let mut default = [0u8; 32];
            default[0] = 0x88; // bootable
            default[1] = 0; // no emulation
            default[6..8].copy_from_slice(&4u16.to_le_bytes()); // 4 virtual sectors
            default[8..12].copy_from_slice(&(boot_image as u32).to_le_bytes());
            put(&mut iso, c + 32, &default);
            put(&mut iso, boot_image * SECTOR, &[0xEB, 0xFE]); // jmp $
        }

        // Terminator.
        let t = terminator * SECTOR;
        iso[t] = 255;
        put(&mut iso, t + 1, b"CD001");
        iso[t + 6] = 1;

        for ((_, data), extent) in files.iter().zip(&file_extents) {
            put(&mut iso, extent * SECTOR, data);
        }
        iso
    }
}

fn put(buf: &mut [u8], offset: usize, bytes: &[u8]) {
    buf[offset..offset + bytes.len()].copy_from_slice(bytes);
}

fn padded(s: &[u8], len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = s.iter().take(len).copied().collect();
    v.resize(len, b' ');
    v
}

fn padded_zero(s: &[u8], len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = s.iter().take(len).copied().collect();
    v.resize(len, 0);
    v
}

fn both16(v: usize) -> Vec<u8> {
    let v = v as u16;
    [v.to_le_bytes(), v.to_be_bytes()].concat()
}

fn both32(v: usize) -> Vec<u8> {
    let v = v as u32;
    [v.to_le_bytes(), v.to_be_bytes()].concat()
}

fn dir_record(extent: usize, size: usize, directory: bool, name: &[u8]) -> Vec<u8> {
    let len = 33 + name.len() + (name.len() + 1) % 2;
    let mut r = vec![0u8; len];
    r[0] = len as u8;
    r[2..10].copy_from_slice(&both32(extent));
    r[10..18].copy_from_slice(&both32(size));
    r[18..25].copy_from_slice(&[124, 1, 1, 0, 0, 0, 0]); // 2024-01-01 00:00:00 UTC
    r[25] = if directory { 2 } else { 0 };
    r[28..32].copy_from_slice(&both16(1));
    r[32] = name.len() as u8;
    r[33..33 + name.len()].copy_from_slice(name);
    r
}

/// True when `image` has the ISO 9660 signature at sector 16.
pub(crate) fn has_iso9660_signature(image: &[u8]) -> bool {
    image.len() >= 17 * SECTOR && &image[16 * SECTOR + 1..16 * SECTOR + 6] == b"CD001"
}
