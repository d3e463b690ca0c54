import Foundation

/// The official CIFAR binary format: per record 1 label byte (CIFAR-10) or 2 (CIFAR-100:
/// coarse, fine), then 3072 bytes: the R, G and B planes of a 32×32 image, row-major.
public enum CIFARBinary {
    public enum Variant: Sendable {
        case cifar10
        /// CIFAR-100; `fine` picks the 100 fine labels, otherwise the 20 coarse ones.
        case cifar100(fine: Bool)

        var labelBytes: Int { if case .cifar10 = self { return 1 } else { return 2 } }
        /// Which label byte of a record is used.
        var labelOffset: Int { if case .cifar100(let fine) = self { return fine ? 1 : 0 } else { return 0 } }
        var classCount: Int {
            switch self {
            case .cifar10: return 10
            case .cifar100(let fine): return fine ? 100 : 20
            }
        }
    }

    public static let cifar10Classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    /// Reads the files in order into one in-memory dataset.
    public static func load(files: [String], variant: Variant) throws -> InMemoryDataset {
        let record = variant.labelBytes + 3072
        var pixels: [UInt8] = []
        var labels: [Int32] = []
        for path in files {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw DatasetError("\(path): cannot read CIFAR file")
            }
            guard !data.isEmpty, data.count % record == 0 else {
                throw DatasetError("\(path): size \(data.count) is not a multiple of the \(record)-byte CIFAR record")
            }
            let bytes = [UInt8](data)
            pixels.reserveCapacity(pixels.count + bytes.count / record * 3072)
            for r in 0..<(bytes.count / record) {
                let base = r * record
                let label = Int(bytes[base + variant.labelOffset])
                guard label < variant.classCount else {
                    throw DatasetError("\(path): record \(r) has label \(label), outside 0..<\(variant.classCount)")
                }
                labels.append(Int32(label))
                // Planes (R, G, B) → interleaved (H, W, 3).
                let img = base + variant.labelBytes
                for p in 0..<1024 {
                    pixels.append(bytes[img + p])
                    pixels.append(bytes[img + 1024 + p])
                    pixels.append(bytes[img + 2048 + p])
                }
            }
        }
        let names: [String]
        if case .cifar10 = variant { names = cifar10Classes } else { names = (0..<variant.classCount).map { "class\($0)" } }
        return InMemoryDataset(width: 32, height: 32, pixels: pixels, labels: labels, classNames: names)
    }

    /// CIFAR-10 training (`data_batch_1…5.bin`) or test (`test_batch.bin`) files in `directory`.
    public static func cifar10(directory: String, train: Bool) throws -> InMemoryDataset {
        let names = train ? (1...5).map { "data_batch_\($0).bin" } : ["test_batch.bin"]
        return try load(files: names.map { directory + "/" + $0 }, variant: .cifar10)
    }

    /// CIFAR-100 `train.bin` or `test.bin` in `directory`.
    public static func cifar100(directory: String, train: Bool, fine: Bool = true) throws -> InMemoryDataset {
        try load(files: [directory + "/" + (train ? "train.bin" : "test.bin")], variant: .cifar100(fine: fine))
    }
}
