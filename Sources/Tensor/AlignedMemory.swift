/// Bytes of a cache line: activation and frame buffers start on one, so a 16-float (zmm) load
/// of an aligned row touches one line, not two (the allocator's default, 16 bytes, puts every
/// large buffer 16 bytes past a line: a sparse kernel's x loads then all split).
public let cacheLineBytes = 64

/// `count` floats (uninitialised) starting on a cache line. Free with `deallocate()`.
public func allocateAlignedFloats(_ count: Int) -> UnsafeMutablePointer<Float> {
    UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * MemoryLayout<Float>.stride, alignment: cacheLineBytes)
        .bindMemory(to: Float.self, capacity: max(count, 1))
}
