import ArgumentParser
import Datasets
import Foundation
import Tensor

/// `sparsetrain bench data`: images per second for decode + augment + batch.
struct BenchData: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data", abstract: "Time the data pipeline: decode, augment, batch (per core).")

    enum Source: String, ExpressibleByArgument, CaseIterable {
        case cifar10, imagefolder, packed, synthetic
        /// 300 random 500×375 JPEGs written to a temporary folder, ImageNet-style crops to 224.
        case imagenetJpegs = "imagenet-jpegs"
    }

    @Option(help: "Data: cifar10 (ImageFolder of 32×32 JPEGs, from disk and from memory), imagefolder, packed, synthetic, imagenet-jpegs.")
    var dataset: Source = .synthetic

    @Option(help: "Dataset directory (cifar10: the split directory, e.g. ../shared/data/cifar10/train).")
    var path: String?

    @Option(help: "Images per batch.")
    var batch: Int = 128

    @Option(help: "Batches to time.")
    var batches: Int = 20

    @Option(help: "Threads decoding and augmenting.")
    var threads: Int = 1

    @Flag(help: "Print one JSON object.")
    var json = false

    struct Row: Codable {
        var source: String
        var images_per_second: Double
        var images_per_second_per_core: Double
        var threads: Int
        var minimum_queue_depth_while_consuming: Int
    }

    func validate() throws {
        guard batch > 0, batches > 0, threads > 0 else { throw InputError("--batch, --batches and --threads must be positive") }
        if [.cifar10, .imagefolder, .packed].contains(dataset) && path == nil {
            throw InputError("--dataset \(dataset.rawValue) needs --path")
        }
    }

    func run() throws {
        var rows: [Row] = []
        do {
            switch dataset {
            case .cifar10:
                let folder = try ImageFolder(root: path!)
                let cifar = ImageTransform(size: 32, augmentation: .padCrop(padding: 4, flip: true), normalization: .cifar10)
                rows.append(try measure("cifar10 JPEG from disk", folder, cifar))
                let memory = try InMemoryDataset.load(folder, threads: threads)
                rows.append(try measure("cifar10 from memory", memory, cifar))
            case .imagefolder:
                let folder = try ImageFolder(root: path!, minimumSide: 224)
                let t = ImageTransform(size: 224, augmentation: .imageNetTrain, normalization: .imageNet)
                rows.append(try measure("imagefolder JPEG → 224", folder, t))
            case .packed:
                let packed = try PackedDataset(directory: path!)
                let t = ImageTransform(size: min(224, packed.index.size), augmentation: .imageNetTrain, normalization: .imageNet)
                rows.append(try measure("packed → \(t.size)", packed, t))
            case .synthetic:
                let ds = SyntheticDataset(count: batch * batches, seed: 1)
                let t = ImageTransform(size: 32, augmentation: .padCrop(padding: 4, flip: true), normalization: .cifar10)
                rows.append(try measure("synthetic 32×32", ds, t))
            case .imagenetJpegs:
                let dir = try writeTestJPEGs(count: 300)
                defer { try? FileManager.default.removeItem(atPath: dir) }
                let folder = try ImageFolder(root: dir, minimumSide: 224)
                let t = ImageTransform(size: 224, augmentation: .imageNetTrain, normalization: .imageNet)
                rows.append(try measure("500×375 JPEG → 224 (scaled decode)", folder, t))
                let full = try ImageFolder(root: dir)
                rows.append(try measure("500×375 JPEG → 224 (full decode)", full, t))
            }
        } catch let e as DatasetError {
            throw InputError(e.description)
        }
        if json {
            print(try jsonLine(rows))
            return
        }
        var table = TextTable("source", "threads", "images/s", "images/s per core", "min queue depth")
        for r in rows {
            table.add(r.source, "\(r.threads)", fixed(r.images_per_second, 0), fixed(r.images_per_second_per_core, 0),
                      "\(r.minimum_queue_depth_while_consuming)")
        }
        print(table.render())
        print("min queue depth: batches ready when a consumer that needs 5 ms per batch asked for one (0 = it waited)")
    }

    /// Throughput of the loader alone, then the queue depth seen by a consumer that spends
    /// 5 ms per batch (a fast training step).
    private func measure(_ name: String, _ ds: ImageDataset, _ t: ImageTransform) throws -> Row {
        let count = min(batches, max(1, ds.count / batch))
        let sharding = Sharding(count: ds.count, batchSize: batch, rank: 0, worldSize: 1, seed: 1)
        let plan = Array(sharding.batches(epoch: 0).prefix(count))
        guard !plan.isEmpty else { throw InputError("\(name): fewer images (\(ds.count)) than one batch (\(batch))") }
        let loader = DataLoader(dataset: ds, transform: t, depth: 4, threads: threads)
        let t0 = now()
        loader.start(batches: plan, epoch: 0, seed: 1)
        var images = 0
        while let b = try loader.next() { images += b.count }
        let rate = Double(images) / (now() - t0)
        loader.start(batches: plan, epoch: 1, seed: 1)
        usleep(50_000)
        while try loader.next() != nil { usleep(5_000) }
        return Row(source: name, images_per_second: rate, images_per_second_per_core: rate / Double(threads),
                   threads: threads, minimum_queue_depth_while_consuming: loader.minimumReady)
    }

    /// Random smooth 500×375 JPEGs in 3 class folders of a temporary directory.
    private func writeTestJPEGs(count: Int) throws -> String {
        let dir = NSTemporaryDirectory() + "sparsetrain-bench-\(ProcessInfo.processInfo.processIdentifier)"
        var rng = Xoshiro256(seed: 3)
        for i in 0..<count {
            let cls = dir + "/class\(i % 3)"
            try FileManager.default.createDirectory(atPath: cls, withIntermediateDirectories: true)
            let (w, h) = (500, 375)
            let fx = rng.nextFloat() * 0.05, fy = rng.nextFloat() * 0.05
            var px = [UInt8](repeating: 0, count: w * h * 3)
            for y in 0..<h {
                for x in 0..<w {
                    for c in 0..<3 {
                        px[(y * w + x) * 3 + c] = UInt8(truncatingIfNeeded: Int(128 + 100 * sinf(Float(x) * fx + Float(y) * fy + Float(c))) + rng.nextIndex(below: 16))
                    }
                }
            }
            let jpg = try JPEG.encode(pixels: px, width: w, height: h, quality: 90)
            guard FileManager.default.createFile(atPath: "\(cls)/\(i).jpg", contents: Data(jpg)) else {
                throw InputError("cannot write \(cls)/\(i).jpg")
            }
        }
        return dir
    }
}
