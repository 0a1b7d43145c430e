//! Which cases partition a case key lands on, computed here exactly as librdkafka's default
//! partitioner (`consistent_random`) computes it: CRC-32 of the key, modulo the partition count.
//!
//! Why compute it ourselves: to know, before producing, whether this instance owns the partition
//! and may apply the record without the cases hop ([`super::local`]). Why librdkafka's formula: an
//! instance of an earlier build, which left the choice to librdkafka, must send a case to the same
//! partition during a rolling upgrade. One difference: librdkafka sends an empty key to a random
//! partition, this sends it to partition 0 (a case key is empty only for a record with an empty id,
//! which the engine rejects; a fixed partition keeps such records in order).

/// The CRC-32 of `bytes` (IEEE 802.3, reflected, as zlib's `crc32` and librdkafka's `rd_crc32`).
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = table();
    let mut crc = !0u32;
    for &b in bytes {
        crc = TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

const fn table() -> [u32; 256] {
    let mut table = [0u32; 256];
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
        table[i] = c;
        i += 1;
    }
    table
}

/// The partition of `key` among `partitions` (at least 1).
pub fn partition_of(key: &[u8], partitions: i32) -> i32 {
    (crc32(key) % partitions.max(1) as u32) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_values() {
        // The check value of CRC-32/ISO-HDLC, and two more from zlib.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
    }

    #[test]
    fn a_key_always_lands_on_one_partition_within_range() {
        for n in [1, 3, 12] {
            for key in ["lead-1", "6f0c3b0e-1d2a-5b55-9a8e-2d0c3c1f7a10", "x"] {
                let p = partition_of(key.as_bytes(), n);
                assert!((0..n).contains(&p), "{key} → {p} of {n}");
                assert_eq!(p, partition_of(key.as_bytes(), n));
            }
        }
        assert_eq!(partition_of(b"123456789", 7), (0xCBF4_3926u32 % 7) as i32);
    }
}
