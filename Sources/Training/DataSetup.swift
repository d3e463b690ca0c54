import Datasets
import Foundation

/// Train and test data of a run, with their transforms.
struct RunData {
    var train: ImageDataset
    var test: ImageDataset
    var trainTransform: ImageTransform
    var testTransform: ImageTransform

    /// Builds the datasets the config names, checked against the model's input shape.
    static func make(_ c: TrainConfig, input: (channels: Int, height: Int, width: Int)) throws -> RunData {
        guard input.channels == 3 else { throw ConfigError("image datasets are RGB: the model input needs 3 channels, got \(input.channels)") }
        let size = input.height
        guard input.width == size else { throw ConfigError("image inputs must be square, got \(input.height)×\(input.width)") }
        let train: ImageDataset, test: ImageDataset
        do {
            switch c.dataset {
            case "synthetic":
                train = SyntheticDataset(count: c.syntheticTrain, classes: c.classes, width: size, height: size, seed: UInt64(c.seed))
                test = SyntheticDataset(count: c.syntheticTest, classes: c.classes, width: size, height: size, seed: UInt64(c.seed),
                                        firstSample: c.syntheticTrain)
            case "cifar10", "imagefolder":
                let minSide = c.dataset == "imagefolder" ? size : nil
                let tr = try ImageFolder(root: c.dataPath + "/train", minimumSide: minSide)
                let te = try ImageFolder(root: c.dataPath + "/test", minimumSide: minSide)
                if c.inMemory && c.dataset == "cifar10" {
                    train = try InMemoryDataset.load(tr, threads: c.dataThreads)
                    test = try InMemoryDataset.load(te, threads: c.dataThreads)
                } else {
                    train = tr
                    test = te
                }
            case "cifar10-binary":
                train = try CIFARBinary.cifar10(directory: c.dataPath, train: true)
                test = try CIFARBinary.cifar10(directory: c.dataPath, train: false)
            case "cifar100-binary":
                train = try CIFARBinary.cifar100(directory: c.dataPath, train: true)
                test = try CIFARBinary.cifar100(directory: c.dataPath, train: false)
            case "packed":
                train = try PackedDataset(directory: c.dataPath + "/train")
                test = try PackedDataset(directory: c.dataPath + "/test")
            default:
                throw ConfigError("unknown dataset '\(c.dataset)'")
            }
        } catch let e as DatasetError {
            throw ConfigError(e.description)
        }
        // Both splits number their classes by sorted name: the same names give the same labels.
        guard train.classNames == test.classNames else {
            let tr = Set(train.classNames), te = Set(test.classNames)
            let missing = tr.subtracting(te).sorted(), extra = te.subtracting(tr).sorted()
            var parts: [String] = []
            if !missing.isEmpty { parts.append("missing from the test split: \(Self.names(missing))") }
            if !extra.isEmpty { parts.append("only in the test split: \(Self.names(extra))") }
            throw ConfigError("the train and test splits of \(c.dataPath) have different classes (\(parts.joined(separator: "; "))); labels would not match")
        }
        guard train.classNames.count <= c.classes else {
            throw ConfigError("the data has \(train.classNames.count) classes but classes is \(c.classes)")
        }
        let norm: Normalization
        let trainAug: Augmentation, testAug: Augmentation
        switch c.dataset {
        case "synthetic":
            norm = Normalization(mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25])
            trainAug = .none
            testAug = .none
        case "imagefolder", "packed":
            norm = .imageNet
            if size <= 64 {
                trainAug = .padCrop(padding: 4, flip: true)
                testAug = .none
            } else {
                trainAug = .imageNetTrain
                testAug = .resizeCenterCrop(resize: Int((Double(size) * 256 / 224).rounded()))
            }
        default:
            norm = .cifar10
            trainAug = .padCrop(padding: 4, flip: true)
            testAug = .none
        }
        return RunData(train: train, test: test,
                       trainTransform: ImageTransform(size: size, augmentation: trainAug, normalization: norm),
                       testTransform: ImageTransform(size: size, augmentation: testAug, normalization: norm))
    }

    /// Up to five names, then a count of the rest.
    static func names(_ list: [String]) -> String {
        list.count <= 5 ? list.joined(separator: ", ") : list.prefix(5).joined(separator: ", ") + " and \(list.count - 5) more"
    }
}
