/// Element types that collectives accept. The element type of a buffer picks the MPI datatype,
/// so a call whose buffer and datatype disagree cannot be written.
public protocol CommScalar: Sendable {
    static var commType: CommType { get }
}

/// The element types the communication layer moves; each maps to one MPI datatype.
public enum CommType: Sendable {
    case float32, float64, int32, int64, uint8

    /// Size of one element in bytes.
    public var byteCount: Int {
        switch self {
        case .float32, .int32: return 4
        case .float64, .int64: return 8
        case .uint8: return 1
        }
    }
}

extension Float: CommScalar { public static var commType: CommType { .float32 } }
extension Double: CommScalar { public static var commType: CommType { .float64 } }
extension Int32: CommScalar { public static var commType: CommType { .int32 } }
extension Int64: CommScalar { public static var commType: CommType { .int64 } }
extension UInt8: CommScalar { public static var commType: CommType { .uint8 } }

/// Reduction applied element-wise across ranks.
public enum ReduceOp: String, Sendable, CaseIterable {
    case sum, max, min
}

/// Whether a collective first checks that every rank passed the same element count.
///
/// `.verify` costs one extra small allreduce and turns a mismatch into `CommError.countMismatch`
/// on every rank. `.trusted` skips it; use it only where counts were agreed once before (the
/// gradient reducer checks its layout when it is built, then runs `.trusted` every step).
public enum CountCheck: Sendable {
    case verify, trusted
}
