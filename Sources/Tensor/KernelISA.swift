import CSparseKernels
import Foundation

/// Instruction set of a variant of the C kernels (sparse kernels, direct 3×3 convolution),
/// chosen at run time: the widest the CPU runs unless `SPARSETRAIN_ISA` names a narrower one.
public enum KernelISA: Int, CaseIterable, Sendable, CustomStringConvertible {
    case portable = 0, avx2 = 1, avx512 = 2

    /// Whether this CPU runs the variant.
    public var isSupported: Bool { stsp_isa_supported(Int32(rawValue)) != 0 }

    /// The widest supported variant, or the one `SPARSETRAIN_ISA` (`avx512`, `avx2`, `portable`)
    /// names when this CPU supports it.
    public static let best: KernelISA = {
        if let name = ProcessInfo.processInfo.environment["SPARSETRAIN_ISA"],
           let isa = KernelISA(name: name), isa.isSupported { return isa }
        return allCases.reversed().first { $0.isSupported } ?? .portable
    }()

    public init?(name: String) {
        switch name.lowercased() {
        case "avx512", "avx-512", "avx512f": self = .avx512
        case "avx2": self = .avx2
        case "portable", "c": self = .portable
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .portable: return "portable C"
        case .avx2: return "AVX2+FMA"
        case .avx512: return "AVX-512F"
        }
    }
}
