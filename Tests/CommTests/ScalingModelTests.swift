import XCTest
@testable import Comm
import Tensor

final class ScalingModelTests: XCTestCase {
    let fabric = Fabric(name: "t", alpha: 2e-6, beta: 1e-9, gamma: 1e-10, source: "test")

    func testAllreduceCostsAreTheTextbookFormulas() {
        let n = 1_000_000, a = 2e-6, b = 1e-9, g = 1e-10, nd = 1e6
        // N = 4: ring 6α + 1.5nβ + 0.75nγ; recursive doubling 2(α + nβ + nγ);
        // Rabenseifner (p′ = 4) 4α + 1.5nβ + 0.75nγ; binomial 4(α + nβ) + 2nγ.
        XCTAssertEqual(AllreduceAlgorithm.ring.seconds(bytes: n, ranks: 4, on: fabric), 6 * a + 1.5 * nd * b + 0.75 * nd * g, accuracy: 1e-12)
        XCTAssertEqual(AllreduceAlgorithm.recursiveDoubling.seconds(bytes: n, ranks: 4, on: fabric), 2 * (a + nd * b + nd * g), accuracy: 1e-12)
        XCTAssertEqual(AllreduceAlgorithm.rabenseifner.seconds(bytes: n, ranks: 4, on: fabric), 4 * a + 1.5 * nd * b + 0.75 * nd * g, accuracy: 1e-12)
        XCTAssertEqual(AllreduceAlgorithm.binomial.seconds(bytes: n, ranks: 4, on: fabric), 4 * (a + nd * b) + 2 * nd * g, accuracy: 1e-12)
        // N = 6 is not a power of two: Rabenseifner over p′ = 4 plus 3α + 2nβ + ½nγ; ⌈log₂6⌉ = 3.
        XCTAssertEqual(AllreduceAlgorithm.rabenseifner.seconds(bytes: n, ranks: 6, on: fabric),
                       4 * a + 1.5 * nd * b + 0.75 * nd * g + 3 * a + 2 * nd * b + 0.5 * nd * g, accuracy: 1e-12)
        XCTAssertEqual(AllreduceAlgorithm.binomial.seconds(bytes: n, ranks: 6, on: fabric), 6 * (a + nd * b) + 3 * nd * g, accuracy: 1e-12)
        for algorithm in AllreduceAlgorithm.allCases {
            XCTAssertEqual(algorithm.seconds(bytes: n, ranks: 1, on: fabric), 0, "one rank communicates nothing")
        }
    }

    func testOpenMPIChoicesFollowItsDecisionRules() {
        XCTAssertEqual(AllreduceAlgorithm.openMPIBlocking(bytes: 100, ranks: 2), .recursiveDoubling)
        XCTAssertEqual(AllreduceAlgorithm.openMPIBlocking(bytes: 100_000, ranks: 2), .ring)
        XCTAssertEqual(AllreduceAlgorithm.openMPIBlocking(bytes: 1 << 20, ranks: 2), .rabenseifner)
        XCTAssertEqual(AllreduceAlgorithm.openMPIBlocking(bytes: 4096, ranks: 8), .recursiveDoubling)
        XCTAssertEqual(AllreduceAlgorithm.openMPIBlocking(bytes: 100_000, ranks: 100), .recursiveDoubling)
        XCTAssertEqual(AllreduceAlgorithm.openMPIBlocking(bytes: 100_000, ranks: 200), .binomial)
        XCTAssertEqual(AllreduceAlgorithm.openMPIBlocking(bytes: 1000, ranks: 1024), .binomial)
        XCTAssertEqual(AllreduceAlgorithm.openMPIBlocking(bytes: 100 << 20, ranks: 1024), .rabenseifner)
        // libnbc: binomial in place, below 4 ranks or 64 KiB; else reduce-scatter + allgather.
        XCTAssertEqual(AllreduceAlgorithm.openMPINonBlocking(bytes: 1 << 20, ranks: 1024, inPlace: true), .binomial)
        XCTAssertEqual(AllreduceAlgorithm.openMPINonBlocking(bytes: 1 << 20, ranks: 2, inPlace: false), .binomial)
        XCTAssertEqual(AllreduceAlgorithm.openMPINonBlocking(bytes: 60_000, ranks: 8, inPlace: false), .binomial)
        XCTAssertEqual(AllreduceAlgorithm.openMPINonBlocking(bytes: 1 << 20, ranks: 8, inPlace: false), .rabenseifner)
    }

    func testBlockingExposesEveryBucketAndOverlapHidesTheEarlyOnes() {
        let free = Fabric(name: "t", alpha: 1e-3, beta: 0, gamma: 0, source: "latency only")
        // Two buckets of 1 MiB ready at 2 ms and 9 ms, backward ends at 10 ms, 5 ms after it.
        let profile = StepProfile(backwardSeconds: 0.010, tailSeconds: 0.005,
                                  buckets: [.init(ready: 0.002, bytes: 1 << 20), .init(ready: 0.009, bytes: 1 << 20)], batch: 32)
        // 4 ranks, blocking: Rabenseifner 2·log₂4·α = 4 ms per bucket, all exposed.
        let blocking = predictStep(profile, ranks: 4, fabric: free, schedule: .blocking)
        XCTAssertEqual(blocking.algorithm, .rabenseifner)
        XCTAssertEqual(blocking.communicationSeconds, 0.008, accuracy: 1e-12)
        XCTAssertEqual(blocking.exposedSeconds, 0.008, accuracy: 1e-12)
        XCTAssertEqual(blocking.stepSeconds, 0.023, accuracy: 1e-12)
        // Overlapped, not in place (libnbc: Rabenseifner from 4 ranks and 64 KiB) 2·2·α = 4 ms
        // each; the first runs 2–6 ms (hidden), the second 9–13 ms: 3 ms past the end of backward.
        let overlapped = predictStep(profile, ranks: 4, fabric: free, schedule: .overlapped)
        XCTAssertEqual(overlapped.algorithm, .rabenseifner)
        XCTAssertEqual(overlapped.communicationSeconds, 0.008, accuracy: 1e-12)
        XCTAssertEqual(overlapped.exposedSeconds, 0.003, accuracy: 1e-12)
        XCTAssertEqual(overlapped.stepSeconds, 0.018, accuracy: 1e-12)
        XCTAssertEqual(overlapped.imagesPerSecond, 4 * 32 / 0.018, accuracy: 1e-6)
        XCTAssertEqual(overlapped.efficiency, 0.015 / 0.018, accuracy: 1e-12)
        // A communication thread: the same pipeline with coll/tuned's algorithm (Rabenseifner).
        let threaded = predictStep(profile, ranks: 4, fabric: free, schedule: .thread)
        XCTAssertEqual(threaded.algorithm, .rabenseifner)
        XCTAssertEqual(threaded.exposedSeconds, 0.003, accuracy: 1e-12)
        XCTAssertEqual(ReductionSchedule.engine(ranks: 2, thread: true), .thread)
        XCTAssertEqual(ReductionSchedule.engine(ranks: 2), .blocking)
        XCTAssertEqual(ReductionSchedule.engine(ranks: 4), .overlapped)
        // Straggler term σ·E[max of N standard normals]; none on one rank.
        var jittery = profile
        jittery.jitterSeconds = 0.001
        XCTAssertEqual(predictStep(jittery, ranks: 1024, fabric: free, schedule: .blocking).stragglerSeconds,
                       0.001 * expectedMaximumOfStandardNormals(1024), accuracy: 1e-12)
        XCTAssertEqual(predictStep(jittery, ranks: 1, fabric: free, schedule: .blocking).stepSeconds, 0.015, accuracy: 1e-12)
    }

    func testTheExpectedMaximumOfNormalsMatchesExactValuesAndSampling() {
        XCTAssertEqual(inverseStandardNormal(0.5), 0, accuracy: 1e-9)
        XCTAssertEqual(inverseStandardNormal(0.975), 1.959964, accuracy: 1e-5)
        XCTAssertEqual(inverseStandardNormal(0.025), -1.959964, accuracy: 1e-5)
        XCTAssertEqual(expectedMaximumOfStandardNormals(1), 0)
        // Exact: 1/√π for 2, 3/(2√π) for 3; tabulated 1.0294 for 4, 1.5388 for 10.
        XCTAssertEqual(expectedMaximumOfStandardNormals(2), 1 / Double.pi.squareRoot(), accuracy: 0.03)
        XCTAssertEqual(expectedMaximumOfStandardNormals(3), 1.5 / Double.pi.squareRoot(), accuracy: 0.03)
        XCTAssertEqual(expectedMaximumOfStandardNormals(4), 1.0294, accuracy: 0.03)
        XCTAssertEqual(expectedMaximumOfStandardNormals(10), 1.5388, accuracy: 0.03)
        // Against sampling at a cluster's size (Box–Muller, fixed seed).
        var rng = Xoshiro256(seed: 3)
        func normal() -> Double {
            let u = max(Double(rng.nextFloat()), 1e-9), v = Double(rng.nextFloat())
            return (-2 * log(u)).squareRoot() * cos(2 * Double.pi * v)
        }
        let n = 256, trials = 2000
        let mean = (0..<trials).map { _ in (0..<n).map { _ in normal() }.max()! }.reduce(0, +) / Double(trials)
        XCTAssertEqual(expectedMaximumOfStandardNormals(n), mean, accuracy: 0.05)
        XCTAssertLessThan(expectedMaximumOfStandardNormals(1024), (2 * log(1024.0)).squareRoot())
    }

    func testTheFitRecoversAlphaAndBetaOfExactTimings() {
        for ranks in [2, 4, 6] {
            let sizes = [8, 1024, 65_536, 1 << 20, 1 << 24]
            let samples = sizes.map { n in
                (bytes: n, seconds: AllreduceAlgorithm.openMPIBlocking(bytes: n, ranks: ranks).seconds(bytes: n, ranks: ranks, on: fabric))
            }
            let fitted = fitFabric(samples, ranks: ranks, gamma: fabric.gamma, name: "fit", source: "s")!
            XCTAssertEqual(fitted.alpha, fabric.alpha, accuracy: 1e-12, "\(ranks) ranks")
            XCTAssertEqual(fitted.beta, fabric.beta, accuracy: 1e-15, "\(ranks) ranks")
        }
        XCTAssertNil(fitFabric([(bytes: 8, seconds: 1e-5)], ranks: 2, gamma: 0, name: "", source: ""), "one size cannot separate α from β")
        XCTAssertNil(fitFabric([(bytes: 8, seconds: 1e-5), (bytes: 1 << 20, seconds: 1e-3)], ranks: 1, gamma: 0, name: "", source: ""))
    }
}
