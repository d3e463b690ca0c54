import Foundation

/// The report's figures, each (caption, SVG): accuracy against sparsity per algorithm and start
/// (log density axis, as in the paper), test accuracy per epoch, and — where the runs recorded
/// them — per-layer densities (paper Fig. 7), density over training and the weights each mask
/// change moved. Curves and bars show each group's first run.
public func reportFigures(_ groups: [RunGroup]) -> [(String, String)] {
    var figures = [("Accuracy against sparsity", accuracyFigure(groups)), ("Training curves", curvesFigure(groups))]
    figures += layerDensityFigures(groups)
    if let f = densityOverTrainingFigure(groups) { figures.append(("Density over training", f)) }
    if let f = maskChangeFigure(groups) { figures.append(("Mask changes", f)) }
    return figures
}

/// Final test accuracy against target sparsity, one line per algorithm, start and model.
func accuracyFigure(_ groups: [RunGroup]) -> String {
    var bySeries: [String: [(Double, Double)]] = [:]
    var order: [String] = []
    for g in groups {
        let run = g.runs[0]
        var name = "\(run.config.model) \(run.config.algorithm) \(run.config.sparsity == 0 ? "dense" : run.config.densityMethod)"
        if run.targetSparsity != run.config.sparsity && run.config.sparsity > 0 { name += String(format: " from %g", run.config.sparsity) }
        if bySeries[name] == nil { order.append(name) }
        bySeries[name, default: []].append((1 - run.targetSparsity, g.finalAccuracy.mean * 100))
    }
    return seriesChartSVG(title: "Final test accuracy against sparsity", series: order.map { ($0, bySeries[$0]!) },
                          xLabel: "sparsity (log density axis)", yLabel: "test accuracy %", logX: true,
                          xTick: { String(format: "%g", ((1 - $0) * 1e6).rounded() / 1e6) })
}

func curvesFigure(_ groups: [RunGroup]) -> String {
    seriesChartSVG(title: "Test accuracy per epoch", series: groups.map { g in
        (g.label, g.runs[0].epochs.map { (Double($0.epoch), $0.test_acc * 100) })
    }, xLabel: "epoch", yLabel: "test accuracy %")
}

/// One bar chart per model and target sparsity: each layer's final density, one bar per group
/// (at most 8 groups per chart).
func layerDensityFigures(_ groups: [RunGroup]) -> [(String, String)] {
    var keys: [String] = []
    var members: [String: [RunGroup]] = [:]
    for g in groups where !g.runs[0].finalLayerDensities.isEmpty {
        let key = "\(g.runs[0].config.model) at sparsity \(String(format: "%g", g.runs[0].targetSparsity))"
        if members[key] == nil { keys.append(key) }
        members[key, default: []].append(g)
    }
    return keys.map { key in
        let chosen = Array(members[key]!.prefix(8))
        let layers = chosen[0].runs[0].finalLayerDensities.map(\.layer)
        let series = chosen.map { g -> (String, [Double]) in
            let d = Dictionary(g.runs[0].finalLayerDensities, uniquingKeysWith: { a, _ in a })
            return (g.label, layers.map { d[$0] ?? 0 })
        }
        return ("Per-layer density, \(key)",
                barChartSVG(title: "Final density of each layer, \(key)", categories: layers, series: series, yLabel: "density"))
    }
}

/// Density against training step for the groups whose density changes (IMP, prune-and-rewire,
/// STR, edge-popup): after every mask change and at every epoch's end.
func densityOverTrainingFigure(_ groups: [RunGroup]) -> String? {
    let series = groups.compactMap { g -> (String, [(Double, Double)])? in
        let run = g.runs[0]
        var points = run.maskChanges.compactMap { c in c.density.map { (Double(c.step), $0) } }
        points += run.epochs.compactMap { e in e.steps.map { (Double($0), e.density) } }
        let densities = points.map(\.1)
        guard points.count > 1, (densities.max()! - densities.min()!) > 1e-3 else { return nil }
        return (g.label, points)
    }
    guard !series.isEmpty else { return nil }
    return seriesChartSVG(title: "Density during training", series: series, xLabel: "step", yLabel: "density")
}

/// Weights moved (dropped + grown) at each mask change, against training step.
func maskChangeFigure(_ groups: [RunGroup]) -> String? {
    let series = groups.compactMap { g -> (String, [(Double, Double)])? in
        let points = g.runs[0].maskChanges.compactMap { c -> (Double, Double)? in
            guard let d = c.dropped, let gr = c.grown else { return nil }
            return (Double(c.step), Double(d + gr))
        }
        return points.isEmpty ? nil : (g.label, points)
    }
    guard !series.isEmpty else { return nil }
    return seriesChartSVG(title: "Weights moved at each mask change", series: series, xLabel: "step", yLabel: "weights dropped + grown")
}
