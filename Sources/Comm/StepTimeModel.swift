import Foundation

/// One data-parallel training step as measured on one rank with the reduction left out: when
/// backward ends, when each gradient bucket becomes ready, and what follows the reduction.
/// Times are seconds from the start of the step.
public struct StepProfile: Codable, Sendable, Equatable {
    public struct Bucket: Codable, Sendable, Equatable {
        /// When its last gradient is final (it could start).
        public var ready: Double
        public var bytes: Int
        public init(ready: Double, bytes: Int) {
            self.ready = ready
            self.bytes = bytes
        }
    }

    /// Forward and backward: the last gradient is final at this time.
    public var backwardSeconds: Double
    /// After backward: gathering and scattering the packed buckets, the optimizer, the rest.
    public var tailSeconds: Double
    /// Buckets in the order the reducer starts them (the same on every rank).
    public var buckets: [Bucket]
    /// Images per rank per step.
    public var batch: Int
    /// Standard deviation of the step time between steps (the straggler term's σ).
    public var jitterSeconds: Double

    public init(backwardSeconds: Double, tailSeconds: Double, buckets: [Bucket], batch: Int, jitterSeconds: Double = 0) {
        self.backwardSeconds = backwardSeconds
        self.tailSeconds = tailSeconds
        self.buckets = buckets
        self.batch = batch
        self.jitterSeconds = jitterSeconds
    }

    public var computeSeconds: Double { backwardSeconds + tailSeconds }
    public var bytesPerStep: Int { buckets.reduce(0) { $0 + $1.bytes } }
}

/// How the buckets of a step are reduced.
public enum ReductionSchedule: String, Codable, Sendable, CaseIterable {
    /// Each bucket with a blocking `MPI_Allreduce` after backward (coll/tuned's choice per size).
    case blocking
    /// Each bucket with an `MPI_Iallreduce` into a staging buffer started as soon as it is
    /// ready, one after the other (libnbc's choice: Rabenseifner or ring from 4 ranks and
    /// 64 KiB, binomial below), hidden behind the rest of backward where it can be. Assumes the
    /// calls progress while backward runs.
    case overlapped
    /// Each bucket with a blocking `MPI_Allreduce` (coll/tuned's choice) on a communication
    /// thread as soon as it is ready, one after the other, hidden behind the rest of backward.
    case thread

    /// What `GradientReducer` does on `ranks` ranks: on a communication thread when it has one,
    /// else blocking below 4 ranks and overlapped from 4.
    public static func engine(ranks: Int, thread: Bool = false) -> ReductionSchedule {
        thread ? .thread : ranks >= 4 ? .overlapped : .blocking
    }
}

/// The predicted step on `ranks` ranks (same batch per rank: weak scaling).
public struct StepPrediction: Codable, Sendable {
    public var ranks: Int
    public var schedule: ReductionSchedule
    /// Seconds of all the step's allreduces back to back.
    public var communicationSeconds: Double
    /// Of those, seconds not hidden behind backward.
    public var exposedSeconds: Double
    /// Expected slowest-rank delay: σ·E[max of N standard normals].
    public var stragglerSeconds: Double
    public var stepSeconds: Double
    public var imagesPerSecond: Double
    /// Step time on one rank over step time on `ranks`.
    public var efficiency: Double
    /// The algorithm of the step's largest bucket.
    public var algorithm: AllreduceAlgorithm?
}

/// Predicts the step of `profile` on `ranks` ranks of `fabric`:
/// step = backward + exposed communication + tail + σ·m(N), m(N) = E[max of N standard normals]
/// (each rank's step a draw, the world waits for the slowest). Blocking: every bucket's
/// allreduce after backward, all exposed. Overlapped and thread: bucket k starts at
/// max(ready_k, end of bucket k−1) and the part of the last end past the end of backward is
/// exposed (libnbc's algorithm for overlapped, coll/tuned's for the thread).
public func predictStep(_ profile: StepProfile, ranks: Int, fabric: Fabric, schedule: ReductionSchedule) -> StepPrediction {
    var communication = 0.0, free = 0.0
    var largest: (bytes: Int, algorithm: AllreduceAlgorithm)?
    for bucket in profile.buckets where bucket.bytes > 0 {
        let algorithm = schedule == .overlapped
            ? AllreduceAlgorithm.openMPINonBlocking(bytes: bucket.bytes, ranks: ranks, inPlace: false)
            : AllreduceAlgorithm.openMPIBlocking(bytes: bucket.bytes, ranks: ranks)
        let cost = algorithm.seconds(bytes: bucket.bytes, ranks: ranks, on: fabric)
        communication += cost
        free = schedule == .blocking ? 0 : max(bucket.ready, free) + cost
        if ranks > 1, bucket.bytes > (largest?.bytes ?? 0) { largest = (bucket.bytes, algorithm) }
    }
    let exposed = schedule == .blocking ? communication : max(0, free - profile.backwardSeconds)
    let straggler = profile.jitterSeconds * expectedMaximumOfStandardNormals(ranks)
    let step = profile.computeSeconds + exposed + straggler
    return StepPrediction(ranks: ranks, schedule: schedule, communicationSeconds: communication, exposedSeconds: exposed,
                          stragglerSeconds: straggler, stepSeconds: step,
                          imagesPerSecond: Double(ranks * profile.batch) / step,
                          efficiency: profile.computeSeconds / step, algorithm: largest?.algorithm)
}

/// E[max of n independent standard normals], by Blom's plotting position Φ⁻¹((n − 0.375)/(n + 0.25)):
/// 0 at n = 1, 0.59 at 2 (exact 0.56), 1.05 at 4 (1.03), 3.23 at 1,024 (3.2). The asymptote √(2 ln n)
/// (1.18 at 2, 3.72 at 1,024) overstates it at every size a cluster has.
public func expectedMaximumOfStandardNormals(_ n: Int) -> Double {
    guard n > 1 else { return 0 }
    return inverseStandardNormal((Double(n) - 0.375) / (Double(n) + 0.25))
}

/// Φ⁻¹(p) for 0 < p < 1 by bisection on Φ(x) = erfc(−x/√2)/2 (to 1e-12; used on a handful of values).
public func inverseStandardNormal(_ p: Double) -> Double {
    precondition(p > 0 && p < 1, "Φ⁻¹ needs 0 < p < 1")
    var lo = -40.0, hi = 40.0
    for _ in 0..<100 where hi - lo > 1e-12 {
        let mid = (lo + hi) / 2
        if erfc(-mid / 2.squareRoot()) / 2 < p { lo = mid } else { hi = mid }
    }
    return (lo + hi) / 2
}

/// α and β of a fabric from blocking allreduce times `(bytes, seconds)` measured on `ranks`
/// ranks, with γ known: least squares of t − c_γ·n·γ = c_α·α + c_β·n·β, where c_α, c_β, c_γ
/// are the coefficients of the algorithm OpenMPI picks at that size. Nil without two sizes
/// that separate α from β.
public func fitFabric(_ samples: [(bytes: Int, seconds: Double)], ranks: Int, gamma: Double, name: String, source: String) -> Fabric? {
    guard ranks > 1 else { return nil }
    // Coefficients from the cost function itself: cost is linear in (α, β, γ).
    func coefficients(_ n: Int) -> (a: Double, b: Double, g: Double) {
        let alg = AllreduceAlgorithm.openMPIBlocking(bytes: n, ranks: ranks)
        func cost(_ a: Double, _ b: Double, _ g: Double) -> Double {
            alg.seconds(bytes: n, ranks: ranks, on: Fabric(name: "", alpha: a, beta: b, gamma: g, source: ""))
        }
        return (cost(1, 0, 0), cost(0, 1, 0), cost(0, 0, 1))
    }
    var saa = 0.0, sab = 0.0, sbb = 0.0, sat = 0.0, sbt = 0.0
    for (n, t) in samples {
        let c = coefficients(n)
        // Relative errors: weight each sample by 1/t² so small and large messages count alike.
        let w = 1 / max(t * t, 1e-18)
        let y = t - c.g * gamma
        saa += w * c.a * c.a; sab += w * c.a * c.b; sbb += w * c.b * c.b
        sat += w * c.a * y; sbt += w * c.b * y
    }
    let det = saa * sbb - sab * sab
    guard det > 1e-300 * max(saa * sbb, 1e-300) else { return nil }
    let alpha = (sat * sbb - sbt * sab) / det, beta = (saa * sbt - sab * sat) / det
    return Fabric(name: name, alpha: max(alpha, 0), beta: max(beta, 1e-15), gamma: gamma, source: source)
}
