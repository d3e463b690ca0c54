import XCTest
import NN
@testable import Sparsity

final class DensityTests: XCTestCase {
    static let models: [(ModelName, Int)] = [(.vgg16, 10), (.resnet18, 10), (.resnet20, 10), (.resnet50ImageNet, 1000)]
    static let layersByModel: [ModelName: [MaskableLayer]] = {
        var out: [ModelName: [MaskableLayer]] = [:]
        for (m, c) in models { out[m] = MaskableLayer.all(in: try! buildModel(m, classes: c).store) }
        return out
    }()
    let sparsities = [0.5, 0.8, 0.9, 0.95, 0.99, 0.995, 0.999]

    func testEveryMethodHitsTheGlobalDensityExactly() throws {
        for (model, _) in Self.models {
            let layers = Self.layersByModel[model]!
            let total = layers.reduce(0) { $0 + $1.count }
            for s in sparsities {
                for method in [DensityMethod.uniform, .erk, .er, .balanced, .pyramidal] {
                    for (first, last) in [(false, false), (true, true)] {
                        let opts = DensityOptions(keepFirstDense: first, keepLastDense: last)
                        let d: [Double]
                        do { d = try layerwiseDensities(layers, density: 1 - s, method: method, options: opts) } catch {
                            // Dense first/last layers can exceed a tiny budget; that must be the reason.
                            XCTAssertTrue(first && "\(error)".contains("dense first/last"), "\(model) \(method) \(s): \(error)")
                            continue
                        }
                        XCTAssertTrue(d.allSatisfy { $0 >= 0 && $0 <= 1 }, "\(model) \(method) \(s)")
                        let weighted = zip(d, layers).reduce(0.0) { $0 + $1.0 * Double($1.1.count) }
                        XCTAssertEqual(weighted / Double(total), 1 - s, accuracy: 1e-9, "\(model) \(method) \(s)")
                        let nnz = nonZeroCounts(layers, densities: d, density: 1 - s)
                        XCTAssertEqual(nnz.reduce(0, +), Int(((1 - s) * Double(total)).rounded()), "\(model) \(method) \(s)")
                        XCTAssertTrue(zip(nnz, layers).allSatisfy { $0 >= 0 && $0 <= $1.count })
                        if first { XCTAssertEqual(d[0], 1) }
                        if last { XCTAssertEqual(d[d.count - 1], 1) }
                    }
                }
            }
        }
    }

    func testERKFollowsTheRigLFormulaWhenNothingSaturates() throws {
        let layers = Self.layersByModel[.resnet18]!
        let d = try layerwiseDensities(layers, density: 0.001, method: .erk)
        XCTAssertTrue(d.allSatisfy { $0 < 1 })
        // p_l = ε (c_out + c_in + k_h + k_w) / (c_out c_in k_h k_w) with one ε for all layers.
        let eps = layers.indices.map { i -> Double in
            let l = layers[i]
            let score = Double(l.outUnits + l.inUnits + (l.isConvolution ? l.kernelH + l.kernelW : 0)) / Double(l.count)
            return d[i] / score
        }
        for e in eps { XCTAssertEqual(e, eps[0], accuracy: 1e-9 * eps[0]) }
        // At a high density the small layers saturate and become dense; the total stays exact.
        let high = try layerwiseDensities(layers, density: 0.5, method: .erk)
        XCTAssertEqual(high[0], 1)
    }

    func testPyramidalIsPowersOfTheFirstDensity() throws {
        let layers = Self.layersByModel[.vgg16]!
        XCTAssertEqual(layers.count, 14)
        let d = try layerwiseDensities(layers, density: 0.05, method: .pyramidal)
        for (l, p) in d.enumerated() { XCTAssertEqual(p, pow(d[0], Double(l + 1)), accuracy: 1e-12) }
        XCTAssertEqual(d[0], 0.7214, accuracy: 1e-4)       // DESIGN.md §4
        XCTAssertEqual(d[13], 0.0103, accuracy: 1e-4)
    }

    func testBalancedGivesEqualNonZerosAndRedistributesTheSurplus() throws {
        let layers = Self.layersByModel[.vgg16]!
        let d = try layerwiseDensities(layers, density: 0.1, method: .balanced)
        let nnz = zip(d, layers).map { $0 * Double($1.count) }
        let unsaturated = d.indices.filter { d[$0] < 1 }
        XCTAssertLessThan(unsaturated.count, layers.count, "small layers saturate at density 0.1")
        for i in unsaturated { XCTAssertEqual(nnz[i], nnz[unsaturated[0]], accuracy: 1e-6) }
        // The paper's code stops at the saturation and lands at 0.079 here; the total is exact.
        let total = Double(layers.reduce(0) { $0 + $1.count })
        XCTAssertEqual(nnz.reduce(0, +) / total, 0.1, accuracy: 1e-12)
    }

    func testFileDensitiesAreCheckedAgainstTheModel() throws {
        let layers = Self.layersByModel[.resnet20]!
        var file = Dictionary(uniqueKeysWithValues: layers.map { ($0.name, 0.5) })
        let d = try layerwiseDensities(layers, density: 0.2, method: .file, options: .init(layerRatios: file))
        for p in d { XCTAssertEqual(p, 0.2, accuracy: 1e-12) }   // equal ratios rescaled to the target
        file["no.such.layer"] = 0.3
        XCTAssertThrowsError(try layerwiseDensities(layers, density: 0.2, method: .file, options: .init(layerRatios: file))) {
            XCTAssertTrue("\($0)".contains("'no.such.layer'"), "\($0)")
        }
        file["no.such.layer"] = nil
        file[layers[3].name] = nil
        XCTAssertThrowsError(try layerwiseDensities(layers, density: 0.2, method: .file, options: .init(layerRatios: file))) {
            XCTAssertTrue("\($0)".contains("no entry for layer '\(layers[3].name)'"), "\($0)")
        }
    }

    func testBadDensitiesAreRejected() {
        let layers = Self.layersByModel[.resnet20]!
        for bad in [0, -0.1, 1.5, .nan, .infinity] {
            XCTAssertThrowsError(try layerwiseDensities(layers, density: bad, method: .erk)) {
                XCTAssertTrue("\($0)".contains("outside (0, 1]"), "\($0)")
            }
        }
    }
}
