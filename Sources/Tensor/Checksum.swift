/// A fast 64-bit checksum of raw bytes, for comparing buffers across ranks.
///
/// Per 8-byte word `w`: `h = rotl(h ^ w, 29) &* 0x9E3779B97F4A7C15`, then a final avalanche.
/// Not cryptographic; order-sensitive; ~1 ns per word.
public func checksum64(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0xCBF2_9CE4_8422_2325) -> UInt64 {
    var h = seed ^ UInt64(truncatingIfNeeded: bytes.count)
    let words = bytes.count / 8
    if let base = bytes.baseAddress, words > 0 {
        for i in 0..<words {
            let w = base.loadUnaligned(fromByteOffset: i &* 8, as: UInt64.self)
            h = ((h ^ w) << 29 | (h ^ w) >> 35) &* 0x9E37_79B9_7F4A_7C15
        }
    }
    for i in (words * 8)..<bytes.count {
        h = ((h ^ UInt64(bytes[i])) << 29 | (h ^ UInt64(bytes[i])) >> 35) &* 0x9E37_79B9_7F4A_7C15
    }
    h ^= h >> 33
    h = h &* 0xFF51_AFD7_ED55_8CCD
    h ^= h >> 33
    return h
}

/// Checksum of a Float buffer's bit patterns (so `-0.0` and `0.0` differ, and NaNs compare).
public func checksum64(_ values: UnsafeBufferPointer<Float>) -> UInt64 {
    checksum64(UnsafeRawBufferPointer(values))
}

/// Checksum of a string's UTF-8 bytes.
public func checksum64(_ text: String) -> UInt64 {
    var copy = text
    return copy.withUTF8 { checksum64(UnsafeRawBufferPointer($0)) }
}
