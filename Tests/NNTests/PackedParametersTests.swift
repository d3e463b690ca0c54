import XCTest
@testable import NN
import Tensor

/// A sparse weight's values and momentum kept packed at its mask's positions: the dense layout
/// seen through the store always shows the current weights, writes through it reach the next
/// update, and a change of positions keeps what stays and gives +0 to what joins.
final class PackedParametersTests: XCTestCase {
    /// A 40×50 maskable weight at density 0.1 (positions every 10th entry) and a bias.
    private func makeStore() -> (ParameterStore, ParameterRef, [Int32]) {
        let store = ParameterStore()
        let w = store.register("w", shape: [40, 50], maskable: true, initializer: .normal(std: 1))
        _ = store.register("b", shape: [40], maskable: false, initializer: .normal(std: 1))
        store.allocate(seed: 5)
        let m = store.maskValues(w)
        for i in 0..<w.count { m[i] = i % 10 == 3 ? 1 : 0 }
        store.applyMask()
        return (store, w, (0..<w.count).filter { $0 % 10 == 3 }.map { Int32($0) })
    }

    func testPackedValuesFollowUpdatesAndWritesThroughTheDenseLayout() {
        let (store, w, positions) = makeStore()
        let before = Array(store.values)
        store.pack(w, positions: positions)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: store.packedValues(w)!, count: positions.count)),
                       positions.map { before[w.offset + Int($0)] }, "gathered at the positions")
        XCTAssertEqual(Array(store.values), before, "the dense layout shows the same weights")
        // An update of the packed copy shows in the dense layout and in the dense passes' weights.
        store.gradients.update(repeating: 1)
        let sgd = SGD(momentum: 0.9, nesterov: false, weightDecay: 0)
        sgd.step(store, learningRate: 0.5, active: [positions])
        let p0 = w.offset + Int(positions[0])
        XCTAssertEqual(store.packedValues(w)![0], before[p0] - 0.5)
        XCTAssertEqual(store.forwardWeight(w)[Int(positions[0])], before[p0] - 0.5, "dense passes read the update")
        XCTAssertEqual(store.values[p0], before[p0] - 0.5)
        XCTAssertEqual(store.values[w.offset].bitPattern, 0, "masked entries stay +0")
        // A write through the dense layout reaches the next update, also after a sparse pass
        // read the packed copy.
        _ = store.packedValues(w)
        store.values[p0] = 3
        store.value(w)[Int(positions[1])] = -2
        store.gradients.update(repeating: 0)
        sgd.step(store, learningRate: 0, active: [positions])
        XCTAssertEqual(store.packedValues(w)![0], 3)
        XCTAssertEqual(store.packedValues(w)![1], -2)
    }

    func testMovingPositionsKeepsStayingEntriesAndZeroesJoiningOnes() {
        let (store, w, positions) = makeStore()
        store.pack(w, positions: positions)
        let kept = store.values[w.offset + 13], momentumKept: Float = 0.25
        store.packedMomentum(w)![1] = momentumKept   // position 13
        // Drop position 3, keep 13, add 4 (was masked: +0).
        let next = [Int32(4)] + positions.dropFirst()
        store.pack(w, positions: Array(next))
        XCTAssertEqual([store.packedValues(w)![0], store.packedValues(w)![1]], [0, kept])
        XCTAssertEqual(Array(store.packedMomentum(w)![0..<2]), [0, momentumKept])
        XCTAssertEqual(store.values[w.offset + 3].bitPattern, 0, "a dropped entry reads +0 in the dense layout")
        // Denser than packedValuesMaxDensity: the values go back to the dense layout.
        let dense = (0..<Int32(w.count)).filter { $0 % 10 != 0 }
        store.pack(w, positions: dense)
        XCTAssertNil(store.packedValues(w))
        XCTAssertEqual(store.packedMomentum(w)?.count, dense.count, "the momentum stays packed")
        XCTAssertEqual(store.values[w.offset + 13], kept)
        XCTAssertEqual(store.values[w.offset + 3].bitPattern, 0)
        XCTAssertEqual(store.values[w.offset + 5].bitPattern, 0, "joined entries start at +0")
    }

    func testAReleasedMaskReadsAsItsPositionsAndAMaskThatDiffersIsKept() {
        let (store, w, positions) = makeStore()
        let before = Array(store.mask)
        store.pack(w, positions: positions)
        store.releaseMaskPages()
        XCTAssertEqual(store.packed[w.index]?.maskReleased, true)
        XCTAssertEqual(Array(store.maskStorage[w.offset..<(w.offset + 10)]), [Float](repeating: 0, count: 10), "given back")
        XCTAssertEqual(Array(store.mask), before, "written out from the positions when read")
        XCTAssertEqual(store.packed[w.index]?.maskReleased, false)
        // A mask that is not the packed positions is not given back.
        store.maskValues(w)[0] = 1
        store.releaseMaskPages(w)
        XCTAssertEqual(store.packed[w.index]?.maskReleased, false)
        XCTAssertEqual(store.maskValues(w)[0], 1)
    }
}
