#if canImport(Glibc)
import Glibc
#endif

/// Bytes of a cache line: activation and frame buffers start on one, so a 16-float (zmm) load
/// of an aligned row touches one line, not two (the allocator's default, 16 bytes, puts every
/// large buffer 16 bytes past a line: a sparse kernel's x loads then all split).
public let cacheLineBytes = 64

/// Bytes of a transparent huge page (x86-64 and most Linux hosts).
let hugePageBytes = 1 << 21

/// `byteCount` bytes (uninitialised) starting on a cache line; from 4 MiB up, on a huge-page
/// boundary and marked for huge pages (`madvise(MADV_HUGEPAGE)`, which hosts whose transparent
/// huge pages are set to `madvise` need): the sparse kernels read rows of many channels far apart,
/// one 4 KiB page each, more pages than the TLB holds. Free with `deallocate()`.
public func allocateAligned(byteCount: Int) -> UnsafeMutableRawPointer {
    let bytes = max(byteCount, 1)
    guard bytes >= 2 * hugePageBytes else { return .allocate(byteCount: bytes, alignment: cacheLineBytes) }
    let p = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: hugePageBytes)
    #if canImport(Glibc)
    _ = madvise(p, bytes / hugePageBytes * hugePageBytes, MADV_HUGEPAGE)
    #endif
    return p
}

/// `count` floats (uninitialised) from `allocateAligned`. Free with `deallocate()`.
public func allocateAlignedFloats(_ count: Int) -> UnsafeMutablePointer<Float> {
    allocateAligned(byteCount: max(count, 1) * MemoryLayout<Float>.stride).bindMemory(to: Float.self, capacity: max(count, 1))
}
