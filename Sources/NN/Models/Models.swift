/// The models sparsetrain builds, with parameter names like PyTorch's
/// (`layer1.0.conv1.weight`, `features.0.weight`, `fc.weight`).
public enum ModelName: String, CaseIterable, Sendable {
    case mlp
    case vgg11, vgg13, vgg16, vgg19
    case resnet20, resnet32, resnet56, resnet110
    case resnet18, resnet34, resnet50
    case resnet50ImageNet = "resnet50-imagenet"

    /// Input (channels, height, width) the model is made for (MLP: whatever the data has).
    public var defaultInput: (channels: Int, height: Int, width: Int) {
        self == .resnet50ImageNet ? (3, 224, 224) : (3, 32, 32)
    }
}

/// Builds `model` for `classes` outputs and inputs of shape `input`; throws when the input
/// cannot pass through the model (e.g. pooling that would reach zero size).
/// - Parameters:
///   - hidden: hidden widths of the MLP (ignored by other models).
///   - baseWidth: channels of the first stage of ResNet-20/32/56/110 (16 in the paper; stages
///     are w, 2w, 4w; ignored by other models).
///   - batchNormAffine: false builds batch norms without γ, β (edge-popup).
///   - transform: makes the weight reparameterisation once the layers are registered (it may
///     register parameters of its own); installed after allocation.
public func buildModel(
    _ model: ModelName, classes: Int, input: (channels: Int, height: Int, width: Int)? = nil,
    hidden: [Int] = [256, 256], baseWidth: Int = 16, seed: UInt64 = 0,
    batchNormAffine: Bool = true, transform: ((ParameterStore) -> WeightTransform)? = nil
) throws -> Network {
    guard classes >= 2 else { throw ModelError("a classifier needs at least 2 classes, got \(classes)") }
    let shape = input ?? model.defaultInput
    let store = ParameterStore()
    store.batchNormAffine = batchNormAffine
    let body: Sequential
    switch model {
    case .mlp:
        let widths = [shape.channels * shape.height * shape.width] + hidden + [classes]
        let weights = zip(widths, widths.dropFirst()).reduce(Double(0)) { $0 + Double($1.0) * Double($1.1) }
        guard hidden.allSatisfy({ $0 >= 1 }), weights < Double(Int32.max) * 64 else {
            throw ModelError("an MLP with hidden widths \(hidden) has \(String(format: "%.3g", weights)) weights, too many to hold")
        }
        body = mlp(store, inputs: widths[0], hidden: hidden, classes: classes)
    case .vgg11, .vgg13, .vgg16, .vgg19:
        body = vgg(store, depth: Int(model.rawValue.dropFirst(3))!, inChannels: shape.channels, classes: classes)
    case .resnet20, .resnet32, .resnet56, .resnet110:
        guard baseWidth >= 1, baseWidth <= 4096 else { throw ModelError("a ResNet's base width must be in 1...4096, got \(baseWidth)") }
        body = cifarResNet(store, depth: Int(model.rawValue.dropFirst(6))!, inChannels: shape.channels, classes: classes,
                           width: baseWidth)
    case .resnet18:
        body = resNet(store, basic: true, blocks: [2, 2, 2, 2], imageNetStem: false, inChannels: shape.channels, classes: classes)
    case .resnet34:
        body = resNet(store, basic: true, blocks: [3, 4, 6, 3], imageNetStem: false, inChannels: shape.channels, classes: classes)
    case .resnet50:
        body = resNet(store, basic: false, blocks: [3, 4, 6, 3], imageNetStem: false, inChannels: shape.channels, classes: classes)
    case .resnet50ImageNet:
        body = resNet(store, basic: false, blocks: [3, 4, 6, 3], imageNetStem: true, inChannels: shape.channels, classes: classes)
    }
    return try Network(name: model.rawValue, store: store, body: body, input: shape, classes: classes, seed: seed,
                       transform: transform?(store))
}

/// Flatten → (Linear → ReLU)* → Linear; layers `fc1`, `fc2`, ….
func mlp(_ store: ParameterStore, inputs: Int, hidden: [Int], classes: Int) -> Sequential {
    let body = Sequential([Flatten()])
    let widths = [inputs] + hidden + [classes]
    for i in 0..<(widths.count - 1) {
        body.append(Linear("fc\(i + 1)", store: store, inFeatures: widths[i], outFeatures: widths[i + 1]))
        if i < widths.count - 2 { body.append(ReLU(inPlace: true)) }
    }
    return body
}

/// VGG for CIFAR: 3×3 conv (no bias) → BN → ReLU blocks with max-pools, the last pool replaced
/// by a 2×2 average pool, then `classifier = Linear(512, classes)`. Names follow PyTorch's
/// `features` indices (conv at i, BN at i+1).
func vgg(_ store: ParameterStore, depth: Int, inChannels: Int, classes: Int) -> Sequential {
    let m = 0
    let configs: [Int: [Int]] = [
        11: [64, m, 128, m, 256, 256, m, 512, 512, m, 512, 512],
        13: [64, 64, m, 128, 128, m, 256, 256, m, 512, 512, m, 512, 512],
        16: [64, 64, m, 128, 128, m, 256, 256, 256, m, 512, 512, 512, m, 512, 512, 512],
        19: [64, 64, m, 128, 128, m, 256, 256, 256, 256, m, 512, 512, 512, 512, m, 512, 512, 512, 512],
    ]
    let body = Sequential()
    var index = 0
    var channels = inChannels
    for v in configs[depth]! {
        if v == m {
            body.append(MaxPool2d(kernelSize: 2))
            index += 1
        } else {
            body.append(Conv2d("features.\(index)", store: store, inChannels: channels, outChannels: v,
                               kernelSize: 3, padding: 1))
            body.append(BatchNorm("features.\(index + 1)", store: store, channels: v, relu: true))
            index += 3
            channels = v
        }
    }
    body.append(AvgPool2d(kernelSize: 2))
    body.append(Flatten())
    body.append(Linear("classifier", store: store, inFeatures: 512, outFeatures: classes))
    return body
}

/// ResNet-20/32/56/110 for CIFAR (He et al. 2016): w/2w/4w channels (w = 16), (depth − 2)/6
/// basic blocks per stage, option-A (zero-padding) shortcuts, global average pool, `fc`.
func cifarResNet(_ store: ParameterStore, depth: Int, inChannels: Int, classes: Int, width w: Int = 16) -> Sequential {
    let perStage = (depth - 2) / 6
    let body = Sequential([
        Conv2d("conv1", store: store, inChannels: inChannels, outChannels: w, kernelSize: 3, padding: 1),
        BatchNorm("bn1", store: store, channels: w, relu: true),
    ])
    var channels = w
    for (stage, width) in [w, 2 * w, 4 * w].enumerated() {
        for b in 0..<perStage {
            let stride = (stage > 0 && b == 0) ? 2 : 1
            let needsShortcut = stride != 1 || channels != width
            let shortcut: () -> Layer? = {
                needsShortcut ? ZeroPadShortcut(outChannels: width, stride: stride) : nil
            }
            body.append(basicBlock(store, "layer\(stage + 1).\(b)", channels, width, stride, shortcut: shortcut))
            channels = width
        }
    }
    ResidualBlock.chain(body.layers)
    body.append(AvgPool2d.global())
    body.append(Flatten())
    body.append(Linear("fc", store: store, inFeatures: 4 * w, outFeatures: classes))
    return body
}

/// ResNet-18/34 (basic blocks) and ResNet-50 (bottlenecks) with projection shortcuts
/// (`downsample.0` conv 1×1, `downsample.1` BN). CIFAR stem: 3×3 conv, no max-pool; ImageNet
/// stem: 7×7 stride-2 conv and 3×3 stride-2 max-pool.
func resNet(_ store: ParameterStore, basic: Bool, blocks: [Int], imageNetStem: Bool,
            inChannels: Int, classes: Int) -> Sequential {
    let body = Sequential()
    if imageNetStem {
        body.append(Conv2d("conv1", store: store, inChannels: inChannels, outChannels: 64, kernelSize: 7, stride: 2, padding: 3))
        body.append(BatchNorm("bn1", store: store, channels: 64, relu: true))
        body.append(MaxPool2d(kernelSize: 3, stride: 2, padding: 1))
    } else {
        body.append(Conv2d("conv1", store: store, inChannels: inChannels, outChannels: 64, kernelSize: 3, padding: 1))
        body.append(BatchNorm("bn1", store: store, channels: 64, relu: true))
    }
    let expansion = basic ? 1 : 4
    var channels = 64
    for (stage, count) in blocks.enumerated() {
        let planes = 64 << stage
        for b in 0..<count {
            let stride = (stage > 0 && b == 0) ? 2 : 1
            let name = "layer\(stage + 1).\(b)"
            let inC = channels
            // Registered after the main branch, as PyTorch orders `downsample` last.
            let shortcut: () -> Layer? = {
                guard stride != 1 || inC != planes * expansion else { return nil }
                return Sequential([
                    Conv2d("\(name).downsample.0", store: store, inChannels: inC,
                           outChannels: planes * expansion, kernelSize: 1, stride: stride),
                    BatchNorm("\(name).downsample.1", store: store, channels: planes * expansion),
                ])
            }
            body.append(basic
                ? basicBlock(store, name, channels, planes, stride, shortcut: shortcut)
                : bottleneck(store, name, channels, planes, stride, shortcut: shortcut))
            channels = planes * expansion
        }
    }
    ResidualBlock.chain(body.layers)
    body.append(AvgPool2d.global())
    body.append(Flatten())
    body.append(Linear("fc", store: store, inFeatures: channels, outFeatures: classes))
    return body
}

/// conv3×3(stride) → BN → ReLU → conv3×3 → BN, plus shortcut, then ReLU.
func basicBlock(_ store: ParameterStore, _ name: String, _ inC: Int, _ outC: Int, _ stride: Int,
                shortcut: () -> Layer?) -> ResidualBlock {
    let main = Sequential([
        Conv2d("\(name).conv1", store: store, inChannels: inC, outChannels: outC, kernelSize: 3, stride: stride, padding: 1),
        BatchNorm("\(name).bn1", store: store, channels: outC, relu: true),
        Conv2d("\(name).conv2", store: store, inChannels: outC, outChannels: outC, kernelSize: 3, padding: 1),
        BatchNorm("\(name).bn2", store: store, channels: outC),
    ])
    return ResidualBlock(main: main, shortcut: shortcut())
}

/// conv1×1 → BN → ReLU → conv3×3(stride) → BN → ReLU → conv1×1 (×4) → BN, plus shortcut, ReLU.
func bottleneck(_ store: ParameterStore, _ name: String, _ inC: Int, _ planes: Int, _ stride: Int,
                shortcut: () -> Layer?) -> ResidualBlock {
    let main = Sequential([
        Conv2d("\(name).conv1", store: store, inChannels: inC, outChannels: planes, kernelSize: 1),
        BatchNorm("\(name).bn1", store: store, channels: planes, relu: true),
        Conv2d("\(name).conv2", store: store, inChannels: planes, outChannels: planes, kernelSize: 3, stride: stride, padding: 1),
        BatchNorm("\(name).bn2", store: store, channels: planes, relu: true),
        Conv2d("\(name).conv3", store: store, inChannels: planes, outChannels: planes * 4, kernelSize: 1),
        BatchNorm("\(name).bn3", store: store, channels: planes * 4),
    ])
    return ResidualBlock(main: main, shortcut: shortcut())
}
