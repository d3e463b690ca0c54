import Foundation
import XCTest
@testable import Training

final class CheckpointTests: XCTestCase {
    func testComparisonNeverMatchesNonFiniteValues() throws {
        var good = Checkpoint()
        good.tensors = [("param/w", [3], [0.5, -1, 2]), ("bn/v", [1], [1])]
        var nan = good
        nan.tensors[0].values = [.nan, .nan, .nan]
        let c = try CheckpointComparison(good, nan)
        XCTAssertEqual(c.overall, .infinity)
        XCTAssertEqual(c.worst["bn"], 0)
        XCTAssertEqual(c.nonFinite.first, 0)
        XCTAssertEqual(c.nonFinite.second, 3)
        // Two copies that both diverged do not compare equal either.
        XCTAssertEqual(try CheckpointComparison(nan, nan).overall, .infinity)
        var inf = good
        inf.tensors[0].values[1] = .infinity
        XCTAssertEqual(try CheckpointComparison(inf, inf).worst["param"], .infinity)
        var close = good
        close.tensors[0].values[2] = 2.25
        XCTAssertEqual(try CheckpointComparison(good, close).overall, 0.25)
        var other = good
        other.tensors[1].name = "bn/m"
        XCTAssertThrowsError(try CheckpointComparison(good, other))
    }

    func testRoundTripAndSafetensorsLayout() throws {
        var ck = Checkpoint()
        ck.tensors = [("a", [2, 3], (0..<6).map { Float($0) * 0.5 }), ("b/c", [1], [-1.25])]
        ck.metadata = ["epoch": "3", "config": "model: \"x\"\n"]
        let path = NSTemporaryDirectory() + "ck-\(UUID().uuidString).safetensors"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try ck.write(to: path)
        let back = try Checkpoint.read(from: path)
        XCTAssertEqual(back.metadata, ck.metadata)
        XCTAssertEqual(back.tensor("a"), ck.tensors[0].values)
        XCTAssertEqual(back.tensor("b/c"), [-1.25])
        // safetensors: u64 header length, JSON header (8-byte aligned), then data in offset order.
        let data = FileManager.default.contents(atPath: path)!
        let n = Int(data.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        XCTAssertEqual(n % 8, 0)
        let header = try JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + n))) as! [String: Any]
        let a = header["a"] as! [String: Any]
        XCTAssertEqual(a["dtype"] as? String, "F32")
        XCTAssertEqual(a["shape"] as? [Int], [2, 3])
        XCTAssertEqual(data.count, 8 + n + 7 * 4)
        // No temporary file is left next to it.
        let dir = (path as NSString).deletingLastPathComponent
        XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: dir).contains { $0.contains("ck-") && $0.contains(".tmp-") })
    }

    func testTruncatedOrCorruptCheckpointsAreRejected() throws {
        var ck = Checkpoint()
        ck.tensors = [("w", [100], [Float](repeating: 1, count: 100))]
        let good = try ck.encoded()
        let path = NSTemporaryDirectory() + "ck-\(UUID().uuidString).safetensors"
        defer { try? FileManager.default.removeItem(atPath: path) }
        for (bytes, message) in [(good.prefix(good.count - 10), "truncated"), (good.prefix(5), "shorter than its header"),
                                 (Data([255, 255, 255, 255, 0, 0, 0, 0]) + good.dropFirst(8), "exceeds the file"),
                                 (Data([16, 0, 0, 0, 0, 0, 0, 0]) + Data(repeating: 0x41, count: 40), "header is not JSON")] {
            FileManager.default.createFile(atPath: path, contents: Data(bytes))
            XCTAssertThrowsError(try Checkpoint.read(from: path)) { XCTAssertTrue("\($0)".contains(message), "\($0)") }
        }
    }

    func testHostileHeadersAreErrorsNotCrashes() throws {
        let path = NSTemporaryDirectory() + "ck-\(UUID().uuidString).safetensors"
        defer { try? FileManager.default.removeItem(atPath: path) }
        func file(length: UInt64? = nil, header: String, body: Int = 16) -> Data {
            let json = Data(header.utf8)
            var n = (length ?? UInt64(json.count)).littleEndian
            return Data(bytes: &n, count: 8) + json + Data(repeating: 0, count: body)
        }
        let cases: [(Data, String)] = [
            (file(length: UInt64.max, header: "{}"), "exceeds the file"),
            (file(length: UInt64(Int64.max), header: "{}"), "exceeds the file"),
            (file(header: #"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[8,4]}}"#), "impossible shape"),
            (file(header: #"{"w":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,0]}}"#), "impossible shape"),
            (file(header: #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[9223372036854775000,9223372036854775807]}}"#), "runs past the end"),
            (file(header: #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#), "has 4 bytes for shape [2]"),
        ]
        for (bytes, message) in cases {
            FileManager.default.createFile(atPath: path, contents: bytes)
            XCTAssertThrowsError(try Checkpoint.read(from: path)) { XCTAssertTrue("\($0)".contains(message), "\($0)") }
        }
    }
}

final class MaskRatioTests: XCTestCase {
    func testMaskDensitiesReadEveryMaskTensor() {
        var ck = Checkpoint()
        ck.tensors = [("param/a.weight", [4], [1, 2, 3, 4]), ("mask/a.weight", [4], [1, 0, 0, 1]), ("mask/b.weight", [2], [0, 0])]
        XCTAssertEqual(ck.maskDensities(), ["a.weight": 0.5, "b.weight": 0])
    }
}
