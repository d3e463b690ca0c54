import XCTest
import Tensor

/// The sparse convolution passes (every variant this CPU has) against the naive Double
/// reference: 1×1, 3×3, 5×5, 7×7 kernels, strides 1–3, padding 0/1/2/3, odd sizes, batch 1–6,
/// frames of one and of several weight-gradient chunks, at densities 0 (empty layer), one entry,
/// 1%, 50% and 100% with an empty output channel and an empty input channel; one and two
/// threads; dense and packed weight gradients; padded frames and, where they apply, unpadded planes.
final class SparseConvolutionTests: XCTestCase {
    private struct Case { let cin, cout, k, s, p, h, w, n: Int }

    private let cases = [
        Case(cin: 3, cout: 5, k: 3, s: 1, p: 1, h: 7, w: 6, n: 3),
        Case(cin: 4, cout: 6, k: 3, s: 2, p: 1, h: 9, w: 8, n: 2),
        Case(cin: 3, cout: 8, k: 7, s: 2, p: 3, h: 13, w: 11, n: 2),
        Case(cin: 6, cout: 5, k: 1, s: 1, p: 0, h: 5, w: 4, n: 3),
        Case(cin: 6, cout: 5, k: 1, s: 2, p: 0, h: 7, w: 6, n: 2),
        Case(cin: 5, cout: 4, k: 3, s: 1, p: 0, h: 6, w: 7, n: 2),
        Case(cin: 2, cout: 3, k: 5, s: 2, p: 2, h: 9, w: 9, n: 1),
        Case(cin: 4, cout: 3, k: 3, s: 3, p: 1, h: 10, w: 10, n: 2),
        Case(cin: 16, cout: 24, k: 3, s: 1, p: 1, h: 12, w: 12, n: 3),
        Case(cin: 3, cout: 4, k: 1, s: 1, p: 1, h: 4, w: 5, n: 2),
        Case(cin: 3, cout: 4, k: 3, s: 1, p: 2, h: 5, w: 4, n: 2),
        Case(cin: 3, cout: 4, k: 3, s: 2, p: 2, h: 7, w: 6, n: 2),
        // More frame positions than one weight-gradient chunk holds (6·31·31 > 4096).
        Case(cin: 2, cout: 3, k: 3, s: 1, p: 1, h: 30, w: 30, n: 6),
        // Planes layout too (every odd k×k with padding k / 2 at stride 1, and at stride 2 with even sizes): a partial last tile (8×8 × 3,
        // 4×4 × 5, 2×2 × 7), several phases per image (16×16, 32×32), rows of 16 (8×16), more
        // tiles than one weight-gradient chunk (32×32 × 5); tiles that straddle images, each its
        // own phase (7×7 × 5, 14×14 × 2, and 7×6, 12×12, 30×30 above).
        Case(cin: 3, cout: 5, k: 3, s: 1, p: 1, h: 8, w: 8, n: 3),
        Case(cin: 4, cout: 6, k: 3, s: 1, p: 1, h: 16, w: 16, n: 2),
        Case(cin: 5, cout: 3, k: 3, s: 1, p: 1, h: 4, w: 4, n: 5),
        Case(cin: 3, cout: 4, k: 3, s: 1, p: 1, h: 2, w: 2, n: 7),
        Case(cin: 2, cout: 3, k: 3, s: 1, p: 1, h: 8, w: 16, n: 3),
        Case(cin: 2, cout: 3, k: 3, s: 1, p: 1, h: 32, w: 32, n: 5),
        Case(cin: 4, cout: 3, k: 3, s: 1, p: 1, h: 7, w: 7, n: 5),
        Case(cin: 3, cout: 2, k: 3, s: 1, p: 1, h: 14, w: 14, n: 2),
        // Stride 2 on planes (even sizes: the input split into phases): grids 4×4 × 3, 7×7 × 2
        // (tiles straddle images), 8×16 × 2, 2×2 × 5, 16×16 × 3 (several phases per image).
        Case(cin: 4, cout: 6, k: 3, s: 2, p: 1, h: 8, w: 8, n: 3),
        Case(cin: 3, cout: 5, k: 3, s: 2, p: 1, h: 14, w: 14, n: 2),
        Case(cin: 2, cout: 3, k: 3, s: 2, p: 1, h: 16, w: 32, n: 2),
        Case(cin: 5, cout: 3, k: 3, s: 2, p: 1, h: 4, w: 4, n: 5),
        Case(cin: 2, cout: 4, k: 3, s: 2, p: 1, h: 32, w: 32, n: 3),
        // Larger kernels on planes (reach 2 and 3: 25 and 49 lane-mask taps): ResNet-50's 7×7
        // stride-2 stem on even sizes (grid 8×8; 7×6, tiles straddling images), 5×5 and 7×7 at
        // stride 1, 5×5 at stride 2.
        Case(cin: 3, cout: 8, k: 7, s: 2, p: 3, h: 16, w: 16, n: 2),
        Case(cin: 3, cout: 4, k: 7, s: 2, p: 3, h: 14, w: 12, n: 3),
        Case(cin: 2, cout: 3, k: 5, s: 1, p: 2, h: 9, w: 9, n: 2),
        Case(cin: 2, cout: 3, k: 7, s: 1, p: 3, h: 8, w: 8, n: 2),
        Case(cin: 2, cout: 3, k: 5, s: 2, p: 2, h: 10, w: 10, n: 2),
    ]

    private func mask(_ c: Case, pattern: String, rng: inout Xoshiro256) -> [Float] {
        let count = c.cout * c.cin * c.k * c.k, per = c.cin * c.k * c.k
        var m = [Float](repeating: 0, count: count)
        switch pattern {
        case "empty": break
        case "single": m[Int(rng.next() % UInt64(count))] = 1
        case "full": m = [Float](repeating: 1, count: count)
        default:
            let p = pattern == "1%" ? 0.01 : 0.5
            for i in m.indices where rng.nextDouble() < p { m[i] = 1 }
            if c.cout > 1 { for t in 0..<per { m[per + t] = 0 } }  // output channel 1 empty
            if c.cin > 1 {  // input channel 0 empty
                for o in 0..<c.cout { for t in 0..<(c.k * c.k) { m[o * per + t] = 0 } }
            }
        }
        return m
    }

    func testPassesMatchNaiveReference() {
        var rng = Xoshiro256(seed: 21)
        let variants = KernelISA.allCases.filter(\.isSupported)
        print("sparse convolution variants tested on this CPU: \(variants.map(\.description).joined(separator: ", "))")
        for isa in variants {
            for c in cases {
                for pattern in ["empty", "single", "1%", "50%", "full"] {
                    let m = mask(c, pattern: pattern, rng: &rng)
                    let w = m.indices.map { _ in rng.nextFloat() * 2 - 1 }
                    let x = (0..<(c.cin * c.n * c.h * c.w)).map { _ in rng.nextFloat() * 2 - 1 }
                    let conv = SparseConvolution(outChannels: c.cout, inChannels: c.cin, kernelSize: c.k,
                                                 stride: c.s, padding: c.p)
                    m.withUnsafeBufferPointer { conv.rebuild(mask: $0.baseAddress!) }
                    XCTAssertEqual(conv.count, Int(m.reduce(0, +)))
                    let outCount = conv.outputCount(batch: c.n, height: c.h, width: c.w)
                    let dy = (0..<outCount).map { _ in rng.nextFloat() * 2 - 1 }
                    let y0 = conv.referenceForward(weights: w, mask: m, x: x, batch: c.n, height: c.h, width: c.w)
                    let dw0 = conv.referenceWeightGradient(dy: dy, x: x, mask: m, batch: c.n, height: c.h, width: c.w)
                    let dx0 = conv.referenceInputGradient(weights: w, mask: m, dy: dy, batch: c.n, height: c.h, width: c.w)
                    // Frames; planes for every pass; and where the automatic choice takes planes, its mix
                    // (weight gradient on frames framed from the planes input above density 0.05).
                    var layouts: [SparseConvolution.Layout] = [.frames]
                    conv.layout = .planes
                    if conv.usesPlanes(height: c.h, width: c.w, isa: isa) { layouts.append(.planes) }
                    conv.layout = .automatic
                    if conv.usesPlanes(height: c.h, width: c.w, isa: isa) { layouts.append(.automatic) }
                    // Planes read in place and from copies with spread channels (the rule takes copies
                    // only for planes of whole multiples of 64 KiB and many channels).
                    var runs = [1, 2].flatMap { t in layouts.map { (t, $0, false) } }
                    if layouts.contains(.planes) { runs.append((2, .planes, true)) }
                    for (threads, layout, spread) in runs {
                        conv.layout = layout
                        conv.spreadsChannels = spread ? true : nil
                        let tag = "\(isa) \(c) \(pattern) threads \(threads) \(layout)\(spread ? " spread" : "")"
                        var y = [Float](repeating: .nan, count: outCount)
                        var dx = [Float](repeating: .nan, count: x.count)
                        var dw = [Float](repeating: 0, count: m.count)
                        var packed = [Float](repeating: 0, count: max(1, conv.count))
                        w.withUnsafeBufferPointer { wp in
                            x.withUnsafeBufferPointer { xp in
                                conv.forward(weights: wp.baseAddress!, x: xp.baseAddress!, batch: c.n, height: c.h,
                                             width: c.w, y: &y, isa: isa, threads: threads)
                            }
                            dy.withUnsafeBufferPointer { dp in
                                dw.withUnsafeMutableBufferPointer {
                                    conv.weightGradient(dy: dp.baseAddress!, into: .dense($0.baseAddress!), isa: isa, threads: threads)
                                }
                                packed.withUnsafeMutableBufferPointer {
                                    conv.weightGradient(dy: dp.baseAddress!, into: .packed($0.baseAddress!), isa: isa, threads: threads)
                                }
                                conv.inputGradient(weights: wp.baseAddress!, dy: dp.baseAddress!, dx: &dx, batch: c.n, height: c.h,
                                                   width: c.w, isa: isa, threads: threads)
                            }
                        }
                        assertClose(y, y0, "forward " + tag)
                        assertClose(dw, dw0, "weight gradient " + tag)
                        assertClose(dx, dx0, "input gradient " + tag)
                        for k in 0..<conv.count {
                            let expected = dw0[Int(conv.index.weightOffset[k])]
                            XCTAssertEqual(packed[k], expected, accuracy: 1e-4 * max(1, abs(expected)), "packed " + tag)
                        }
                    }
                }
            }
        }
    }

    /// The planes passes with every output written by non-temporal stores (`streamedOutputBytes`
    /// 0) equal those with plain stores, bit for bit, on cache-line-aligned outputs: rows on a
    /// vector (8×8 × 4 images: 256 positions; stride 2 on 16×16 × 2), rows off it (7×7 × 3: 147,
    /// plain stores), and a partial last tile (6×6 × 5: 180).
    func testStreamedPlanesOutputsEqualPlainStores() {
        var rng = Xoshiro256(seed: 33)
        for isa in KernelISA.allCases.filter({ $0.isSupported && $0 != .portable }) {
            for c in [Case(cin: 6, cout: 10, k: 3, s: 1, p: 1, h: 8, w: 8, n: 4), Case(cin: 6, cout: 10, k: 3, s: 2, p: 1, h: 16, w: 16, n: 2),
                      Case(cin: 5, cout: 7, k: 3, s: 1, p: 1, h: 7, w: 7, n: 3), Case(cin: 5, cout: 7, k: 3, s: 1, p: 1, h: 6, w: 6, n: 5)] {
                let m = mask(c, pattern: "50%", rng: &rng)
                let w = m.indices.map { _ in rng.nextFloat() * 2 - 1 }
                let conv = SparseConvolution(outChannels: c.cout, inChannels: c.cin, kernelSize: c.k, stride: c.s, padding: c.p)
                m.withUnsafeBufferPointer { conv.rebuild(mask: $0.baseAddress!) }
                conv.layout = .planes
                XCTAssertTrue(conv.usesPlanes(height: c.h, width: c.w, isa: isa))
                let inCount = c.cin * c.n * c.h * c.w, outCount = conv.outputCount(batch: c.n, height: c.h, width: c.w)
                let x = allocateAlignedFloats(inCount), dy = allocateAlignedFloats(outCount)
                for i in 0..<inCount { x[i] = rng.nextFloat() * 2 - 1 }
                for i in 0..<outCount { dy[i] = rng.nextFloat() * 2 - 1 }
                var results: [[Float]] = []
                for streamed in [false, true] {
                    conv.streamedOutputBytes = streamed ? 0 : Int.max
                    let y = allocateAlignedFloats(outCount), dx = allocateAlignedFloats(inCount)
                    w.withUnsafeBufferPointer { wp in
                        conv.forward(weights: wp.baseAddress!, x: x, batch: c.n, height: c.h, width: c.w, y: y, isa: isa, threads: 2)
                        conv.inputGradient(weights: wp.baseAddress!, dy: dy, dx: dx, batch: c.n, height: c.h, width: c.w,
                                           isa: isa, threads: 2)
                    }
                    results.append(Array(UnsafeBufferPointer(start: y, count: outCount)) + Array(UnsafeBufferPointer(start: dx, count: inCount)))
                    y.deallocate(); dx.deallocate()
                }
                XCTAssertEqual(results[0], results[1], "\(isa) \(c)")
                XCTAssertFalse(results[0].contains { $0.isNaN })
                x.deallocate(); dy.deallocate()
            }
        }
    }

    /// A mask change rebuilt by several workers (index rows counted and filled in parallel, the
    /// input-gradient index sorted in parallel, entry offsets looked up in parallel), or from the
    /// active positions instead of the mask, gives the same indices as one worker scanning the
    /// mask, so the passes give bit-identical results.
    func testParallelRebuildEqualsSequential() {
        var rng = Xoshiro256(seed: 5)
        for (k, s) in [(3, 1), (3, 2), (1, 1)] {
            let cin = k == 1 ? 1024 : 128, cout = 256, n = 2, h = 5, w = 5
            let m = (0..<(cout * cin * k * k)).map { _ in Float(rng.nextDouble() < 0.6 ? 1 : 0) }
            let wts = m.map { _ in rng.nextFloat() * 2 - 1 }
            let x = (0..<(cin * n * h * w)).map { _ in rng.nextFloat() * 2 - 1 }
            var results: [[Float]] = [], indices: [[Int32]] = []
            // One worker from the mask, three from the mask, three from the active positions.
            for (threads, fromPositions) in [(1, false), (3, false), (3, true)] {
                let conv = SparseConvolution(outChannels: cout, inChannels: cin, kernelSize: k, stride: s, padding: k / 2)
                // A first mask, then the real one: the rebuild reuses storage.
                let first = m.map { 1 - $0 }
                first.withUnsafeBufferPointer { conv.rebuild(mask: $0.baseAddress!, threads: threads) }
                if fromPositions {
                    let positions = m.indices.filter { m[$0] != 0 }.map { Int32($0) }
                    XCTAssertEqual(m.withUnsafeBufferPointer { nonZeroPositions(of: $0.baseAddress!, count: m.count) }, positions)
                    positions.withUnsafeBufferPointer { conv.rebuild(activePositions: $0, threads: threads) }
                } else {
                    m.withUnsafeBufferPointer { conv.rebuild(mask: $0.baseAddress!, threads: threads) }
                }
                XCTAssertGreaterThan(conv.count, 1 << 16, "large enough to run in parallel")
                let ix = conv.index
                var all = Array(UnsafeBufferPointer(start: ix.rowStart, count: ix.rows + 1))
                for array in [ix.source, ix.weightOffset, ix.rowMajorPosition, ix.rowMajorOffset, ix.entryOfRowMajor] {
                    all += Array(UnsafeBufferPointer(start: array, count: ix.count))
                }
                indices.append(all)
                let outCount = conv.outputCount(batch: n, height: h, width: w)
                let dy = (0..<outCount).map { Float($0 % 7) - 3 }
                var y = [Float](repeating: .nan, count: outCount), dx = [Float](repeating: .nan, count: x.count)
                var packed = [Float](repeating: 0, count: conv.count)
                wts.withUnsafeBufferPointer { wp in
                    x.withUnsafeBufferPointer { xp in
                        conv.forward(weights: wp.baseAddress!, x: xp.baseAddress!, batch: n, height: h, width: w, y: &y, threads: threads)
                    }
                    dy.withUnsafeBufferPointer { dp in
                        packed.withUnsafeMutableBufferPointer {
                            conv.weightGradient(dy: dp.baseAddress!, into: .packed($0.baseAddress!), threads: threads)
                        }
                        conv.inputGradient(weights: wp.baseAddress!, dy: dp.baseAddress!, dx: &dx, batch: n, height: h, width: w,
                                           threads: threads)
                    }
                }
                var outputs = y
                outputs += dx
                outputs += packed
                results.append(outputs)
            }
            for v in 1...2 {
                XCTAssertEqual(indices[0], indices[v], "k \(k) stride \(s) variant \(v): indices")
                XCTAssertEqual(results[0], results[v], "k \(k) stride \(s) variant \(v): forward, input and weight gradients")
            }
        }
    }

    /// Float sums against the Double reference: within 1e-4, relative to values above 1 (weight
    /// gradients of thousands of positions reach ~50).
    private func assertClose(_ a: [Float], _ b: [Float], _ tag: String) {
        XCTAssertEqual(a.count, b.count, tag)
        var worst = 0 as Float
        for (u, v) in zip(a, b) { worst = max(worst, abs(u - v) / max(1, abs(v))) }
        XCTAssert(worst <= 1e-4, "\(tag): max difference \(worst)")
    }
}
