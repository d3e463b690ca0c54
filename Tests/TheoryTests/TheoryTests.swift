import Foundation
import XCTest
@testable import Theory

final class TheoryTests: XCTestCase {
    func testWidthFactorsMatchHandComputation() throws {
        // Target 10 → 32 → 10 (L = 2), densities 0.1, δ = 0.1:
        // q_2 = 1; q_1 = ⌈log(2·320·1/0.1)/log(1/0.9)⌉ = ⌈8.7640/0.10536⌉ = ⌈83.18⌉ = 84;
        // q_0 = ⌈log(2·320·84/0.1)/log(1/0.9)⌉ = ⌈13.1949/0.10536⌉ = ⌈125.23⌉ = 126.
        let r = try widthRequirement(target: [10, 32, 10], densities: [0.1, 0.1], delta: 0.1)
        XCTAssertEqual(r.targetWeights, [320, 320])
        XCTAssertEqual(r.factors, [126, 84, 1])
        XCTAssertEqual(r.sourceWidths, [1260, 2688, 10])
        // A dense source needs no copies.
        XCTAssertEqual(try widthRequirement(target: [4, 8, 2], densities: [1, 1], delta: 0.01).factors, [1, 1, 1])
        // Convolutional kernels multiply the target weight count.
        XCTAssertEqual(try widthRequirement(target: [3, 16, 10], densities: [0.5, 0.5], delta: 0.1, kernelSizes: [9, 1]).targetWeights, [432, 160])
    }

    func testLowerBoundMatchesHandComputation() throws {
        // d = 1, δ = 0.5, p = 0.5: log(1/(1 − 0.5)) / log(2) = 1.
        XCTAssertEqual(try widthLowerBound(inputs: 1, density: 0.5, delta: 0.5), 1, accuracy: 1e-12)
        // d = 10, δ = 0.001, p = 0.1.
        let expected = log(1 / (1 - pow(0.999, 0.1))) / log(1 / 0.9)
        XCTAssertEqual(try widthLowerBound(inputs: 10, density: 0.1, delta: 0.001), expected, accuracy: 1e-12)
        XCTAssertThrowsError(try widthLowerBound(inputs: 10, density: 1, delta: 0.1))
        XCTAssertThrowsError(try widthLowerBound(inputs: 10, density: 0.5, delta: 1))
    }

    func testFigure2GrowsSlowlyThenSteeply() throws {
        let w5 = try figure2Width(sparsity: 0.5), w9 = try figure2Width(sparsity: 0.9), w99 = try figure2Width(sparsity: 0.99)
        XCTAssertLessThan(w5, w9)
        XCTAssertGreaterThan(Double(w99) / Double(w9), 8)   // ≈ log(1/0.1)/log(1/0.01) × …
        // q_1 = ⌈log(2·1280/0.001)/log(1/(1 − p))⌉ at p = 0.5: ⌈14.756/0.6931⌉ = 22 → 22·128.
        XCTAssertEqual(w5, 22 * 128)
    }

    func testConstructionIsExactAtTheTheoremWidth() throws {
        let target = [6, 12, 8, 4]
        let densities = [0.3, 0.3, 0.3]
        let r = try widthRequirement(target: target, densities: densities, delta: 0.05)
        for seed in 0..<5 {
            let outcome = try runConstruction(target: target, densities: densities, factors: Array(r.factors.dropLast()), seed: UInt64(seed))
            XCTAssertTrue(outcome.succeeded, "seed \(seed): \(outcome.missingLinks) links missing")
            XCTAssertLessThanOrEqual(outcome.maxError, 1e-4, "seed \(seed)")
        }
    }

    func testConstructionFailsWhenTheSourceIsFarTooNarrow() throws {
        let outcome = try runConstruction(target: [6, 12, 4], densities: [0.05, 0.05], factors: [1, 1], seed: 3)
        XCTAssertFalse(outcome.succeeded)
        XCTAssertGreaterThan(outcome.missingLinks, 0)
    }

    func testSubsetSumSearchIsExact() {
        XCTAssertTrue(approximable(0.3, [0.1, 0.2, 0.5], 1e-9))
        XCTAssertTrue(approximable(-0.4, [0.1, -0.5, 0.9], 1e-9))
        XCTAssertFalse(approximable(0.35, [0.1, 0.2, 0.5], 0.01))
        XCTAssertEqual(subsetSums([1, 2, 4]).sorted(), [0, 1, 2, 3, 4, 5, 6, 7])
    }

    func testSubsetSumNeedsAboutOneOverLogFactorMoreVariables() throws {
        let dense = try subsetSumRequiredN(density: 1, epsilon: 0.05, delta: 0.1, trials: 100, seed: 1)
        let sparse = try subsetSumRequiredN(density: 0.2, epsilon: 0.05, delta: 0.1, trials: 100, seed: 1)
        let n1 = try XCTUnwrap(dense.n), n2 = try XCTUnwrap(sparse.n)
        XCTAssertGreaterThan(n2, 2 * n1)
        // n·p stays within a small factor of the dense n.
        XCTAssertEqual(sparse.nTimesDensity! / Double(n1), 1, accuracy: 0.6)
    }
}
