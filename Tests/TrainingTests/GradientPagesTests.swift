import XCTest
import Comm
import Foundation
@testable import NN
import Sparsity
import Tensor
import Training

/// The dense gradient, value and momentum buffers are anonymous mappings whose pages take memory
/// only when written: zeroing by releasing pages gives exactly zeros, and a sparse weight whose
/// layer writes its gradient born packed leaves the pages of its dense gradient, values,
/// momentum and mask unused through training steps.
final class GradientPagesTests: XCTestCase {
    func testReleasingPagesZeroesExactlyTheParameter() {
        let store = ParameterStore()
        let a = store.register("a", shape: [3], maskable: false, initializer: .ones)
        let b = store.register("b", shape: [5000], maskable: true, initializer: .ones)
        let c = store.register("c", shape: [7], maskable: false, initializer: .ones)
        store.allocate(seed: 1)
        store.gradients.update(repeating: 2)
        store.zeroGradientReleasingPages(b)
        XCTAssertEqual(Array(store.gradients[a.offset..<(a.offset + a.count)]), [Float](repeating: 2, count: 3))
        XCTAssertEqual(Array(store.gradients[b.offset..<(b.offset + b.count)]), [Float](repeating: 0, count: 5000))
        XCTAssertEqual(Array(store.gradients[c.offset..<(c.offset + c.count)]), [Float](repeating: 2, count: 7))
        store.gradient(b)[4321] = 5
        XCTAssertEqual(store.gradient(b)[4321], 5, "released pages are writable again")
    }

    func testBornPackedGradientsLeaveTheirPagesUnused() throws {
        let net = try buildModel(.mlp, classes: 10, input: (64, 1, 1), hidden: [1024, 1024], seed: 2)
        let store = net.store
        let layers = MaskableLayer.all(in: store)
        drawMasks(layers, densities: layers.map { _ in 0.02 }, nonZeros: layers.map { Int(Double($0.count) * 0.02) },
                  mode: .count, seed: 3, into: store.mask)
        store.applyMask()
        net.ctx.sparseKernels = .on
        let step = try TrainingStep(network: net, masks: MaskState(store: store), communicator: LocalCommunicator(),
                                    loss: SoftmaxCrossEntropy(), sgd: SGD(), threads: 1)
        let batch = 16
        var rng = Xoshiro256(seed: 4)
        let images = (0..<(batch * 64)).map { _ in rng.nextFloat() - 0.5 }, labels = (0..<batch).map { Int32($0 % 10) }
        func run(denseGradient: Bool = false) throws {
            try images.withUnsafeBufferPointer { x in
                try labels.withUnsafeBufferPointer { y in
                    _ = try step.run(images: x.baseAddress!, labels: y.baseAddress!, batch: batch, normalizer: Float(batch),
                                     learningRate: 0.01, denseGradient: denseGradient)
                }
            }
        }
        // A dense-gradient step (a RiGL update) writes every dense gradient; the steps after it
        // give those pages back.
        for dense in [false, false, true, false, false] { try run(denseGradient: dense) }
        let fc2 = store.info(named: "fc2.weight")!.ref
        XCTAssertEqual(store.gradientPlacement[fc2.index], .packed)
        let resident = residentFraction(UnsafeMutableRawPointer(store.gradient(fc2)), bytes: fc2.count * 4)
        XCTAssertLessThan(resident, 0.05, "dense gradient pages of a born-packed 1024×1024 weight in memory: \(resident)")
        XCTAssertNotNil(store.packedValues(fc2))
        for (what, buffer) in [("values", store.valueStorage), ("momentum", store.momentum), ("mask", store.maskStorage)] {
            let r = residentFraction(UnsafeMutableRawPointer(buffer.baseAddress! + fc2.offset), bytes: fc2.count * 4)
            XCTAssertLessThan(r, 0.05, "dense \(what) pages of a packed 1024×1024 weight in memory: \(r)")
        }
    }

    /// Fraction of the whole pages in [p, p + bytes) that are in memory (mincore).
    private func residentFraction(_ p: UnsafeMutableRawPointer, bytes: Int) -> Double {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let first = (Int(bitPattern: p) + page - 1) / page * page, last = (Int(bitPattern: p) + bytes) / page * page
        let pages = (last - first) / page
        var flags = [UInt8](repeating: 0, count: max(1, pages))
        guard pages > 0, mincore(UnsafeMutableRawPointer(bitPattern: first), last - first, &flags) == 0 else { return 1 }
        return Double(flags.filter { $0 & 1 != 0 }.count) / Double(pages)
    }
}
