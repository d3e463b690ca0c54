import Foundation

/// A network as the α-β-γ model sees it: α seconds of latency per message, β seconds per byte on
/// the wire, γ seconds per byte of reduction arithmetic.
public struct Fabric: Codable, Sendable, Equatable {
    public var name: String
    public var alpha: Double
    public var beta: Double
    public var gamma: Double
    /// Where the numbers come from (a measurement here, or a published benchmark).
    public var source: String

    public init(name: String, alpha: Double, beta: Double, gamma: Double, source: String) {
        self.name = name
        self.alpha = alpha
        self.beta = beta
        self.gamma = gamma
        self.source = source
    }

    /// Link bandwidth in GB/s (1/β).
    public var gigabytesPerSecond: Double { 1 / beta / 1e9 }

    /// Nominal fabrics, for a first estimate only: β from the link's line rate (IEEE 802.3ae
    /// 10 Gb/s, IEEE 802.3by 25 Gb/s, InfiniBand EDR 4 × 25 Gb/s) at the payload efficiency TCP or
    /// RDMA reaches on it, α a typical MPI ping-pong latency of such a link (kernel TCP through one
    /// switch; EDR host adapters and switch). A real cluster's `osu_latency` / `osu_bw` numbers
    /// (`--alpha`, `--beta`) replace them; γ is calibrated on the machine that predicts.
    public static let presets: [Fabric] = [
        Fabric(name: "10gbe", alpha: 30e-6, beta: 1 / 1.15e9, gamma: 0,
               source: "nominal 10 GbE (IEEE 802.3ae): 1.15 GB/s = 92% of 1.25 GB/s line rate over TCP, 30 µs TCP MPI latency"),
        Fabric(name: "25gbe", alpha: 20e-6, beta: 1 / 2.9e9, gamma: 0,
               source: "nominal 25 GbE (IEEE 802.3by): 2.9 GB/s = 93% of 3.125 GB/s line rate over TCP, 20 µs TCP MPI latency"),
        Fabric(name: "ib-edr", alpha: 1.1e-6, beta: 1 / 12.0e9, gamma: 0,
               source: "nominal 100 Gb InfiniBand EDR (4 × 25 Gb/s): 12 GB/s = 96% of 12.5 GB/s, 1.1 µs RDMA MPI latency"),
    ]

    public static func preset(named name: String) -> Fabric? { presets.first { $0.name == name } }
}

/// The allreduce algorithms OpenMPI 4.1 chooses among, with their α-β-γ costs (DESIGN.md §11).
public enum AllreduceAlgorithm: String, Codable, Sendable, CaseIterable {
    /// Reduce-scatter then allgather around a ring: 2(N−1)α + 2(N−1)/N·nβ + (N−1)/N·nγ.
    case ring
    /// Pairwise exchange of the whole vector: ⌈log₂N⌉(α + nβ + nγ).
    case recursiveDoubling = "recursive-doubling"
    /// Recursive-halving reduce-scatter + recursive-doubling allgather over the largest power of
    /// two p′ ≤ N: 2·log₂p′·α + 2(p′−1)/p′·nβ + (p′−1)/p′·nγ, plus 3α + 2nβ + ½nγ when N ≠ p′.
    case rabenseifner
    /// Binomial-tree reduce then broadcast: 2⌈log₂N⌉(α + nβ) + ⌈log₂N⌉·nγ.
    case binomial

    /// Seconds for one allreduce of `bytes` bytes over `ranks` ranks on `fabric`.
    public func seconds(bytes: Int, ranks: Int, on fabric: Fabric) -> Double {
        guard ranks > 1, bytes > 0 else { return 0 }
        let n = Double(bytes), p = Double(ranks)
        let (a, b, g) = (fabric.alpha, fabric.beta, fabric.gamma)
        let logN = ceil(log2(p))
        switch self {
        case .ring:
            return 2 * (p - 1) * a + 2 * (p - 1) / p * n * b + (p - 1) / p * n * g
        case .recursiveDoubling:
            return logN * (a + n * b + n * g)
        case .rabenseifner:
            let pof2 = Double(1 << Int(floor(log2(p))))
            var t = 2 * log2(pof2) * a + 2 * (pof2 - 1) / pof2 * n * b + (pof2 - 1) / pof2 * n * g
            if pof2 != p { t += 3 * a + 2 * n * b + 0.5 * n * g }
            return t
        case .binomial:
            return 2 * logN * (a + n * b) + logN * n * g
        }
    }

    /// What OpenMPI 4.1's blocking `MPI_Allreduce` (coll/tuned, fixed decision rules for a
    /// commutative operation, `coll_tuned_decision_fixed.c`) runs for `bytes` over `ranks`.
    /// Its "segmented ring" without a segment size is the ring; "nonoverlapping" (tuned reduce +
    /// broadcast) is modelled as the binomial reduce + broadcast.
    public static func openMPIBlocking(bytes n: Int, ranks p: Int) -> AllreduceAlgorithm {
        switch p {
        case ..<4:
            if n < 8 { return .ring }
            if n < 4096 { return .recursiveDoubling }
            if n < 8192 { return .ring }
            if n < 16384 { return .recursiveDoubling }
            if n < 262_144 { return .ring }
            return .rabenseifner
        case ..<8: return n < 16 ? .ring : n < 8192 ? .recursiveDoubling : .rabenseifner
        case ..<16: return n < 8192 ? .recursiveDoubling : .rabenseifner
        case ..<32: return n < 64 ? .ring : n < 4096 ? .recursiveDoubling : .rabenseifner
        case ..<64: return n < 128 ? .ring : .rabenseifner
        case ..<128: return n < 262_144 ? .recursiveDoubling : .rabenseifner
        case ..<256: return n < 131_072 ? .binomial : n < 262_144 ? .recursiveDoubling : .rabenseifner
        case ..<512: return n < 4096 ? .binomial : .rabenseifner
        case ..<2048: return n < 2048 ? .binomial : n < 16384 ? .recursiveDoubling : .rabenseifner
        case ..<4096: return n < 2048 ? .binomial : n < 4096 ? .ring : n < 16384 ? .recursiveDoubling : .rabenseifner
        default: return n < 2048 ? .binomial : n < 16384 ? .ring : n < 32768 ? .recursiveDoubling : .rabenseifner
        }
    }

    /// What OpenMPI 4.1's non-blocking `MPI_Iallreduce` (coll/libnbc, `nbc_iallreduce.c`) runs:
    /// the binomial reduce + broadcast when in place, on fewer than 4 ranks or under 64 KiB,
    /// else reduce-scatter + allgather (Rabenseifner) when every power-of-two block has an element.
    public static func openMPINonBlocking(bytes n: Int, ranks p: Int, inPlace: Bool, elementBytes: Int = 4) -> AllreduceAlgorithm {
        if p < 4 || n < 65536 || inPlace { return .binomial }
        let pof2 = 1 << Int(floor(log2(Double(p))))
        return n / elementBytes >= pof2 ? .rabenseifner : .ring
    }
}
