import XCTest
import Tensor

/// The unrolled sparse convolution (small images as one sparse matrix over channel × pixel)
/// against the naive Double reference: 3×3 on 2×2, 4×4, 3×5 and 1×1 images, stride 1 and 2,
/// padding 0 and 1, 1×1 kernels; densities 0, one entry, 1%, 50%, 100%; one and two threads;
/// dense and packed weight gradients; every kernel variant this CPU has; the index rebuilt for a
/// new image size and for a new mask.
final class UnrolledConvolutionTests: XCTestCase {
    private struct Case { let cin, cout, k, s, p, h, w, n: Int }

    func testPassesMatchNaiveReference() {
        let cases = [
            Case(cin: 16, cout: 12, k: 3, s: 1, p: 1, h: 2, w: 2, n: 9),
            Case(cin: 8, cout: 10, k: 3, s: 1, p: 1, h: 4, w: 4, n: 5),
            Case(cin: 6, cout: 7, k: 3, s: 2, p: 1, h: 4, w: 4, n: 3),
            Case(cin: 5, cout: 4, k: 3, s: 1, p: 0, h: 3, w: 5, n: 2),
            Case(cin: 9, cout: 5, k: 3, s: 1, p: 1, h: 1, w: 1, n: 17),
            Case(cin: 7, cout: 6, k: 1, s: 1, p: 0, h: 2, w: 3, n: 4),
            // Enough work for two threads (weight gradient split at whole output channels).
            Case(cin: 48, cout: 40, k: 3, s: 1, p: 1, h: 2, w: 2, n: 32),
            // Enough entries for the index to be built by two workers.
            Case(cin: 96, cout: 80, k: 3, s: 1, p: 1, h: 2, w: 2, n: 4),
        ]
        var rng = Xoshiro256(seed: 31)
        let variants = SparseISA.allCases.filter(\.isSupported)
        print("unrolled convolution variants tested on this CPU: \(variants.map(\.description).joined(separator: ", "))")
        for isa in variants {
            for c in cases {
                let reference = SparseConvolution(outChannels: c.cout, inChannels: c.cin, kernelSize: c.k, stride: c.s, padding: c.p)
                let conv = UnrolledConvolution(outChannels: c.cout, inChannels: c.cin, kernelSize: c.k, stride: c.s, padding: c.p)
                for (token, pattern) in ["empty", "single", "1%", "50%", "full"].enumerated() {
                    let count = c.cout * c.cin * c.k * c.k
                    var m = [Float](repeating: 0, count: count)
                    switch pattern {
                    case "empty": break
                    case "single": m[Int(rng.next() % UInt64(count))] = 1
                    case "full": m = [Float](repeating: 1, count: count)
                    default:
                        let d = pattern == "1%" ? 0.01 : 0.5
                        for i in m.indices where rng.nextDouble() < d { m[i] = 1 }
                    }
                    let active = m.indices.filter { m[$0] != 0 }.map { Int32($0) }
                    let w = m.indices.map { _ in rng.nextFloat() * 2 - 1 }
                    let x = (0..<(c.cin * c.n * c.h * c.w)).map { _ in rng.nextFloat() * 2 - 1 }
                    let outCount = reference.outputCount(batch: c.n, height: c.h, width: c.w)
                    let dy = (0..<outCount).map { _ in rng.nextFloat() * 2 - 1 }
                    let y0 = reference.referenceForward(weights: w, mask: m, x: x, batch: c.n, height: c.h, width: c.w)
                    let dw0 = reference.referenceWeightGradient(dy: dy, x: x, mask: m, batch: c.n, height: c.h, width: c.w)
                    let dx0 = reference.referenceInputGradient(weights: w, mask: m, dy: dy, batch: c.n, height: c.h, width: c.w)
                    for threads in [1, 2] {
                        let tag = "\(isa) \(c) \(pattern) threads \(threads)"
                        active.withUnsafeBufferPointer {
                            conv.prepare(height: c.h, width: c.w, activeOffsets: $0.baseAddress ?? UnsafePointer(bitPattern: 8)!,
                                         count: active.count, token: token, threads: threads)
                        }
                        var y = [Float](repeating: .nan, count: outCount), dx = [Float](repeating: .nan, count: x.count)
                        var dw = [Float](repeating: 0, count: count), packed = [Float](repeating: 0, count: max(1, active.count))
                        w.withUnsafeBufferPointer { wp in
                            x.withUnsafeBufferPointer { xp in
                                conv.forward(weights: wp.baseAddress!, x: xp.baseAddress!, batch: c.n, y: &y, isa: isa, threads: threads)
                            }
                            dy.withUnsafeBufferPointer { dp in
                                conv.inputGradient(weights: wp.baseAddress!, dy: dp.baseAddress!, dx: &dx, batch: c.n,
                                                   isa: isa, threads: threads)
                                dw.withUnsafeMutableBufferPointer {
                                    conv.weightGradient(dy: dp.baseAddress!, into: .dense($0.baseAddress!), isa: isa, threads: threads)
                                }
                                packed.withUnsafeMutableBufferPointer {
                                    conv.weightGradient(dy: dp.baseAddress!, into: .packed($0.baseAddress!), isa: isa, threads: threads)
                                }
                            }
                        }
                        assertClose(y, y0, "forward " + tag)
                        assertClose(dx, dx0, "input gradient " + tag)
                        assertClose(dw, dw0, "weight gradient " + tag)
                        assertClose(Array(packed.prefix(active.count)), active.map { dw0[Int($0)] }, "packed " + tag)
                    }
                }
            }
        }
    }

    private func assertClose(_ a: [Float], _ b: [Float], _ tag: String) {
        XCTAssertEqual(a.count, b.count, tag)
        var worst = 0 as Float
        for (u, v) in zip(a, b) { worst = max(worst, abs(u - v)) }
        XCTAssert(worst <= 1e-4, "\(tag): max difference \(worst)")
    }
}
