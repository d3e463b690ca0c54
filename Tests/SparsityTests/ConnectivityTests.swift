import XCTest
@testable import Sparsity

final class ConnectivityTests: XCTestCase {
    func testUnitsWithoutInputsAndCutClassesAreCounted() {
        // Layer a: 3 outputs × 2 inputs; layer b (last): 2 classes × 3 inputs.
        let a = MaskableLayer(name: "a", offset: 0, outUnits: 3, inUnits: 2)
        let b = MaskableLayer(name: "b", offset: 6, outUnits: 2, inUnits: 3)
        var mask: [Float] = [1, 0, 0, 0, 0, 1,   0, 0, 0, 1, 0, 0]
        var cut = mask.withUnsafeBufferPointer { Disconnection([a, b], mask: $0) }
        XCTAssertEqual(cut.layers.map(\.deadOutputs), [1, 1])
        XCTAssertEqual(cut.deadClasses, 1)
        XCTAssertFalse(cut.isConnected)
        XCTAssertTrue(cut.summary.hasPrefix("2 of 5 units have no inputs (b 1/2, a 1/3)"), cut.summary)
        for i in 6..<12 { mask[i] = 0 }
        cut = mask.withUnsafeBufferPointer { Disconnection([a, b], mask: $0) }
        XCTAssertEqual(cut.emptyLayers, ["b"])
        mask = [Float](repeating: 1, count: 12)
        cut = mask.withUnsafeBufferPointer { Disconnection([a, b], mask: $0) }
        XCTAssertTrue(cut.isConnected)
        XCTAssertEqual(cut.deadUnitCount, 0)
    }
}
