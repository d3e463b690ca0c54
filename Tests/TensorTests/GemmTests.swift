import XCTest
import Tensor

final class GemmTests: XCTestCase {
    func testGemmMatchesNaiveReferenceOnOddShapes() {
        var rng = Xoshiro256(seed: 7)
        let shapes = [(1, 1, 1), (3, 5, 7), (17, 13, 29), (64, 33, 9), (2, 100, 1)]
        for (m, n, k) in shapes {
            for ta in [Transpose.none, .transposed] {
                for tb in [Transpose.none, .transposed] {
                    let a = (0..<(m * k)).map { _ in rng.nextFloat() * 2 - 1 }
                    let b = (0..<(k * n)).map { _ in rng.nextFloat() * 2 - 1 }
                    let c0 = (0..<(m * n)).map { _ in rng.nextFloat() * 2 - 1 }
                    let lda = ta == .none ? k : m, ldb = tb == .none ? n : k
                    var fast = c0, slow = c0
                    fast.withUnsafeMutableBufferPointer { c in
                        gemm(ta, tb, m: m, n: n, k: k, alpha: 0.5, a: a, lda: lda, b: b, ldb: ldb,
                             beta: 0.25, c: c.baseAddress!, ldc: n)
                    }
                    slow.withUnsafeMutableBufferPointer { c in
                        gemmReference(ta, tb, m: m, n: n, k: k, alpha: 0.5, a: a, lda: lda, b: b,
                                      ldb: ldb, beta: 0.25, c: c.baseAddress!, ldc: n)
                    }
                    for i in 0..<(m * n) {
                        XCTAssertEqual(fast[i], slow[i], accuracy: 1e-5 * Float(k + 1),
                                       "m\(m) n\(n) k\(k) \(ta) \(tb) at \(i)")
                    }
                }
            }
        }
    }

    func testBlasThreadsCanBeSet() {
        let before = BLAS.threads
        BLAS.threads = 1
        XCTAssertEqual(BLAS.threads, 1)
        BLAS.threads = before
        XCTAssertFalse(BLAS.coreName.isEmpty)
    }
}
