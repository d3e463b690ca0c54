import Datasets
import Foundation
import Training

/// The parsers that read files users hand us, each given arbitrary bytes. Any thrown error is a
/// correct answer; a crash, hang or runaway allocation is a bug.
enum FuzzTarget: String, CaseIterable {
    case checkpoint, cifar, packedIndex = "packed-index", yaml, jpeg

    /// Scratch directory for parsers that read from disk.
    static let scratch: String = {
        let dir = NSTemporaryDirectory() + "sparsetrain-fuzz-\(getpid())"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }()

    /// A packed directory with 4 labels and one shard of four 4×4 images; inputs replace its index.
    static let packedDirectory: String = {
        let dir = scratch + "/packed"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: dir + "/labels.bin", contents: Data(repeating: 0, count: 16))
        FileManager.default.createFile(atPath: dir + "/shard-00000.bin", contents: Data(repeating: 7, count: 4 * 4 * 3 * 4))
        return dir
    }()

    func run(_ bytes: [UInt8]) {
        switch self {
        case .checkpoint:
            _ = try? Checkpoint.decode(Data(bytes), path: "fuzz.safetensors")
        case .cifar:
            let path = Self.scratch + "/data_batch_1.bin"
            FileManager.default.createFile(atPath: path, contents: Data(bytes))
            if let ds = try? CIFARBinary.load(files: [path], variant: .cifar10), ds.count > 0 {
                _ = try? ds.image(at: ds.count - 1)
                _ = ds.label(at: 0)
            }
        case .packedIndex:
            let dir = Self.packedDirectory
            FileManager.default.createFile(atPath: dir + "/index.json", contents: Data(bytes))
            if let ds = try? PackedDataset(directory: dir), ds.count > 0 {
                _ = try? ds.image(at: 0)
                _ = try? ds.verify()
            }
        case .yaml:
            if var config = try? TrainConfig.parse(yaml: String(decoding: bytes, as: UTF8.self)) {
                _ = try? config.validate(worldSize: 2)
                _ = config.yaml()
                _ = try? config.apply(override: "epochs=3")
            }
        case .jpeg:
            _ = try? JPEG.decode(bytes, minimumSide: 16, name: "fuzz.jpg")
        }
    }

    /// The target named by `SPARSETRAIN_FUZZ_TARGET`.
    static var fromEnvironment: FuzzTarget? {
        ProcessInfo.processInfo.environment["SPARSETRAIN_FUZZ_TARGET"].flatMap(FuzzTarget.init(rawValue:))
    }
}

#if FUZZING
/// libFuzzer's entry point (built with `swift build --sanitize=fuzzer -Xswiftc -DFUZZING`).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let target = FuzzTarget.fromEnvironment else {
        fatalError("set SPARSETRAIN_FUZZ_TARGET to one of \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))")
    }
    target.run(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
#else
/// Without the fuzzer: replays inputs, `sparsetrain-fuzz TARGET FILE…` (regression cases).
@main
struct Replay {
    static func main() {
        let args = CommandLine.arguments.dropFirst()
        guard let name = args.first, let target = FuzzTarget(rawValue: name) else {
            FileHandle.standardError.write(Data("usage: sparsetrain-fuzz \(FuzzTarget.allCases.map(\.rawValue).joined(separator: "|")) FILE…\n".utf8))
            exit(2)
        }
        for path in args.dropFirst() {
            guard let data = FileManager.default.contents(atPath: path) else { continue }
            target.run([UInt8](data))
        }
        print("replayed \(args.count - 1) inputs through \(name) without a crash")
    }
}
#endif
