import Foundation

/// Float buffers in anonymous mappings: their pages take memory only when first written, and
/// can be given back (they then read as zeros) — for state that is large in the dense layout but
/// sparse in use (the dense ranges of packed weights, a mask proposal between mask changes).
public enum PageMappedFloats {
    private static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// Bytes of a mapping of `count` floats (whole pages, at least one).
    private static func mappedBytes(_ count: Int) -> Int {
        (max(count, 1) * MemoryLayout<Float>.stride + pageSize - 1) / pageSize * pageSize
    }

    /// `count` zero floats in a new anonymous mapping; `what` names it in the error.
    public static func allocate(_ count: Int, for what: String) -> UnsafeMutableBufferPointer<Float> {
        guard let map = mmap(nil, mappedBytes(count), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              map != MAP_FAILED else {
            fatalError("cannot map \(mappedBytes(count)) bytes for \(what): \(String(cString: strerror(errno)))")
        }
        return UnsafeMutableBufferPointer(start: map.bindMemory(to: Float.self, capacity: count), count: count)
    }

    /// Unmaps a buffer from `allocate`.
    public static func deallocate(_ buffer: UnsafeMutableBufferPointer<Float>) {
        munmap(buffer.baseAddress, mappedBytes(buffer.count))
    }

    /// Zeroes `p[0..<count]` (inside such a mapping) by giving its whole pages back and writing
    /// zeros to the partial pages at its ends: the same values as writing zeros.
    public static func zeroReleasingPages(_ p: UnsafeMutablePointer<Float>, _ count: Int) {
        let page = pageSize
        let start = UnsafeMutableRawPointer(p), bytes = count * MemoryLayout<Float>.stride
        let first = (Int(bitPattern: start) + page - 1) / page * page
        let last = (Int(bitPattern: start) + bytes) / page * page
        guard last > first else {
            p.update(repeating: 0, count: count)
            return
        }
        let head = first - Int(bitPattern: start), tail = Int(bitPattern: start) + bytes - last
        start.initializeMemory(as: UInt8.self, repeating: 0, count: head)
        UnsafeMutableRawPointer(bitPattern: last)!.initializeMemory(as: UInt8.self, repeating: 0, count: tail)
        if madvise(UnsafeMutableRawPointer(bitPattern: first), last - first, MADV_DONTNEED) != 0 {
            p.update(repeating: 0, count: count)
        }
    }
}
