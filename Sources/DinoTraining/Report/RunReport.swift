import DinoData
import DinoEval
import DinoKernels
import DinoModel
import DinoPictures
import Foundation

/// A training run's report: `RUN/report.html`, one self-contained page (pictures inline as data URIs,
/// no script, nothing fetched), and its curves as PNG in `RUN/report/`: the loss; the teacher's entropy
/// against ln(out_dim) and the KL, where collapse shows; the lr, weight-decay, teacher-momentum and
/// temperature schedules; images/s; the per-epoch k-NN; the attention sheets the run exported; with
/// labelled data, a 2-D PCA map of the teacher's features coloured by class and the k-NN confusion
/// matrix on the validation split; the recipe; the machine and the time.
public enum RunReport {
    /// Writes the report of the run in `run`; returns the page's URL.
    public static func write(run: URL, evaluate: Bool = true, progress: (String) -> Void = { _ in }) throws -> URL {
        let recipeURL = run.appendingPathComponent("recipe.yaml")
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: run.path, isDirectory: &isFolder) else {
            throw DinoError("\(run.path) does not exist: give the --output folder of dino train or quickstart")
        }
        guard isFolder.boolValue else {
            throw DinoError("\(run.path) is a file: give the run folder it is in (the --output folder of dino train or quickstart)")
        }
        guard FileManager.default.fileExists(atPath: recipeURL.path) else {
            throw DinoError("\(run.path) is not a run folder (no recipe.yaml): give the --output folder of dino train or quickstart")
        }
        let recipe = try Recipe.load(path: recipeURL.path)
        let records = readLog(run.appendingPathComponent("log.jsonl"))
        let knn = readKNN(run.appendingPathComponent("knn.jsonl"))
        let folder = run.appendingPathComponent("report")
        try createFolder(folder, what: "report folder")
        var figures: [(title: String, file: String, caption: String)] = []
        func add(_ name: String, _ title: String, _ caption: String, _ image: Image) throws {
            try ImageCodec.writePNG(image, to: folder.appendingPathComponent(name))
            figures.append((title, "report/" + name, caption))
        }
        let steps = records.map { Double($0.step) }
        func series(_ name: String, _ value: (StepRecord) -> Double, _ color: Int) -> LineChart.Series {
            LineChart.Series(name, zip(steps, records.map(value)).map { ($0, $1) }, color: seriesColors[color])
        }
        if !records.isEmpty {
            var lossSeries = [series("loss", { Double($0.loss) }, 0)]
            if records.contains(where: { $0.koleo != 0 }) { lossSeries.append(series("KoLeo", { Double($0.koleo) }, 1)) }
            if records.contains(where: { $0.ibot != 0 }) { lossSeries.append(series("iBOT", { Double($0.ibot) }, 2)) }
            try add("loss.png", "Loss", "The DINO loss per step (cross-entropy of teacher and student over pairs of views).",
                    LineChart(title: "loss", xLabel: "step", yLabel: "", series: lossSeries).render())
            let lnK = log(Double(recipe.out_dim))
            let collapsed = records.suffix(50).allSatisfy { abs(Double($0.teacher_entropy) - lnK) < 0.05 || $0.teacher_entropy < 0.05 }
            try add("collapse.png", "Teacher entropy and KL",
                    "Collapse shows here: a teacher entropy stuck at ln(out_dim) = \(String(format: "%.2f", lnK)) (uniform) or near 0 (one prototype), with the KL near 0."
                        + (collapsed ? " The last 50 steps look collapsed." : " The last 50 steps do not look collapsed."),
                    LineChart(title: "teacher entropy and KL", xLabel: "step", yLabel: "nats",
                              series: [series("H(teacher)", { Double($0.teacher_entropy) }, 0),
                                       LineChart.Series("ln(out_dim)", [(steps.first ?? 0, lnK)], color: seriesColors[3]),
                                       series("KL", { Double($0.kl) }, 1)]).render())
            for (name, title, value) in [("lr", "learning rate", { (r: StepRecord) in r.lr }), ("wd", "weight decay", { $0.wd }),
                                         ("momentum", "teacher momentum", { $0.momentum }),
                                         ("temperature", "teacher temperature", { $0.teacher_temp })] {
                try add("schedule-\(name).png", title.prefix(1).uppercased() + title.dropFirst(), "The \(title) schedule, per step.",
                        LineChart(title: title, xLabel: "step", yLabel: "", series: [series(title, value, 4)], width: 480, height: 240).render())
            }
            try add("speed.png", "Speed", "Training images per second (a moving figure the log keeps per step).",
                    LineChart(title: "images/s", xLabel: "step", yLabel: "", series: [series("images/s", { $0.images_per_s }, 2)]).render())
        }
        if !knn.isEmpty {
            try add("knn.png", "k-NN during training",
                    "The teacher's weighted \(recipe.knn_k)-NN top-1 on the validation split of the training data after each epoch (epoch 0: random init).",
                    LineChart(title: "teacher k-NN top-1 (%)", xLabel: "epoch", yLabel: "%",
                              series: [LineChart.Series("k-NN", knn.map { (Double($0.epoch), $0.top1) }, color: seriesColors[0])],
                              integerX: true).render())
        }
        // Labelled data: the features' map and the confusion matrix, from the teacher as saved.
        var evaluation = ""
        let backboneURL = run.appendingPathComponent("teacher_backbone.safetensors")
        if evaluate, FileManager.default.fileExists(atPath: backboneURL.path),
           let data = try? openDataset(kind: recipe.dataset, path: recipe.data_path.isEmpty ? nil : recipe.data_path),
           !data.classNames.isEmpty {
            progress("report: teacher features of the validation split")
            let backbone = try BackboneCheckpoint.load(from: backboneURL)
            let split = ValidationSplit.indices(count: data.count)
            let memory = DatasetSubset(data, indices: Array(split.memory.prefix(min(recipe.knn_train_size > 0 ? recipe.knn_train_size : 10000, 10000))))
            let queries = DatasetSubset(data, indices: Array(split.queries.prefix(2000)))
            let extractor = try FeatureExtractor(checkpoint: backbone, batchSize: 256)
            let train = try extractor.extract(memory, onBadImage: .skip), test = try extractor.extract(queries, onBadImage: .skip)
            let result = try KNN.evaluate(trainFeatures: train.features, trainLabels: train.labels, testFeatures: test.features,
                                          testLabels: test.labels, dimension: train.dimension, ks: [recipe.knn_k],
                                          classCount: data.classNames.count)[0]
            let basis = PatchComponentMaps.principalComponents(test.features, dimension: test.dimension, count: 2)
            let projected = PatchComponentMaps.project(test.features, dimension: test.dimension, basis: basis)
            let points = (0..<test.count).map { r -> (x: Double, y: Double, label: Int) in
                (Double(projected[r * basis.count]), basis.count > 1 ? Double(projected[r * basis.count + 1]) : 0, test.labels[r])
            }
            try add("features-pca.png", "The teacher's features",
                    "The CLS features of \(test.count) validation images projected on their first two principal components, coloured by class.",
                    ScatterPlot(title: "teacher features, first two principal components", points: points, classNames: data.classNames).render())
            try add("confusion.png", "k-NN confusion matrix",
                    String(format: "Weighted %d-NN on the validation split (%d memory / %d queries): top-1 %.2f%%.", recipe.knn_k, train.count, test.count, result.top1),
                    ConfusionMatrixPicture(title: "k-NN confusion, validation split", counts: result.confusion, classNames: data.classNames).render())
            evaluation = String(format: "teacher weighted %d-NN on the validation split: %.2f%% (%d memory / %d queries)",
                                recipe.knn_k, result.top1, train.count, test.count)
        }
        let sheets = attentionSheets(in: run)
        let html = page(run: run, recipe: recipe, records: records, knn: knn, evaluation: evaluation, figures: figures, sheets: sheets)
        let url = run.appendingPathComponent("report.html")
        try writeAtomically(Data(html.utf8), to: url)
        return url
    }

    static func readLog(_ url: URL) -> [StepRecord] {
        guard let text = try? String(contentsOf: url, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { try? JSONDecoder().decode(StepRecord.self, from: Data($0.utf8)) }
    }

    static func readKNN(_ url: URL) -> [(epoch: Int, top1: Double)] {
        guard let text = try? String(contentsOf: url, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            guard let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let epoch = o["epoch"] as? Int, let top1 = (o["knn_top1"] as? NSNumber)?.doubleValue else { return nil }
            return (epoch, top1)
        }
    }

    /// The attention overviews (or single sheets) the run wrote: `attention/` and `attention/epochNNNN/`.
    static func attentionSheets(in run: URL) -> [(title: String, url: URL)] {
        let root = run.appendingPathComponent("attention")
        var found: [(String, URL)] = []
        func look(_ folder: URL, _ title: String) {
            let names = ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).sorted()
            if names.contains("attention-overview.png") { found.append((title, folder.appendingPathComponent("attention-overview.png"))) }
            else if let sheet = names.first(where: { $0.hasSuffix("-sheet.png") }) { found.append((title, folder.appendingPathComponent(sheet))) }
        }
        look(root, "attention")
        for name in ((try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []).sorted() where name.hasPrefix("epoch") {
            look(root.appendingPathComponent(name), "attention after epoch \(Int(name.dropFirst("epoch".count)) ?? 0)")
        }
        return found
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    static func inline(_ url: URL) -> String {
        "data:image/png;base64," + ((try? Data(contentsOf: url))?.base64EncodedString() ?? "")
    }

    /// The machine the report is written on: CPU model, cores, memory.
    static var machine: String {
        let cpu = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?.split(separator: "\n")
            .first { $0.hasPrefix("model name") }.map { String($0.split(separator: ":", maxSplits: 1).last ?? "").trimmingCharacters(in: .whitespaces) }
        return "\(cpu ?? "unknown CPU"), \(ProcessInfo.processInfo.activeProcessorCount) cores, "
            + String(format: "%.0f GiB", Double(ProcessInfo.processInfo.physicalMemory) / 1_073_741_824)
    }

    static func page(run: URL, recipe: Recipe, records: [StepRecord], knn: [(epoch: Int, top1: Double)], evaluation: String,
                     figures: [(title: String, file: String, caption: String)], sheets: [(title: String, url: URL)]) -> String {
        let last = records.last
        let minutes = (last?.seconds ?? 0) / 60
        var summary = ["\(records.count) steps logged" + (last.map { ", last step \($0.step) (epoch \($0.epoch))" } ?? "")]
        if let last { summary.append(String(format: "final loss %.4f, teacher entropy %.3f of ln(out_dim) = %.3f", last.loss, last.teacher_entropy, log(Double(recipe.out_dim)))) }
        if minutes > 0 { summary.append(String(format: "%.1f minutes of training at about %.0f images/s", minutes, last?.images_per_s ?? 0)) }
        if let first = knn.first, let final = knn.last {
            summary.append(String(format: "k-NN during training: %.2f%% at epoch %d, %.2f%% at epoch %d", first.top1, first.epoch, final.top1, final.epoch))
        }
        if !evaluation.isEmpty { summary.append(evaluation) }
        let formatter = ISO8601DateFormatter()
        var html = """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>dino run: \(escape(run.lastPathComponent))</title>
        <style>
        body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
        h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
        figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; } img { max-width: 100%; border: 1px solid #eee; }
        .grid { display: flex; flex-wrap: wrap; gap: 1em; } .grid figure { flex: 1 1 460px; }
        pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.85em; } li { margin: 0.2em 0; }
        </style></head><body>
        <h1>DINO run <code>\(escape(run.lastPathComponent))</code></h1>
        <ul>\(summary.map { "<li>\(escape($0))</li>" }.joined())</ul>
        <p>\(escape(recipe.arch)) \(recipe.embed_dim > 0 ? "\(recipe.embed_dim) wide, depth \(recipe.depth), " : "")patch \(recipe.patch_size), out_dim \(recipe.out_dim), batch \(recipe.batch_size), on \(escape(recipe.dataset))\(recipe.data_path.isEmpty ? "" : " (" + escape(recipe.data_path) + ")"). Report written \(formatter.string(from: Date())) on \(escape(machine)).</p>

        """
        let curves = figures.filter { !$0.file.contains("schedule-") }, schedules = figures.filter { $0.file.contains("schedule-") }
        for f in curves {
            html += "<h2>\(escape(f.title))</h2><figure><img src=\"\(inline(run.appendingPathComponent(f.file)))\" alt=\"\(escape(f.title))\"><figcaption>\(escape(f.caption))</figcaption></figure>\n"
        }
        if !schedules.isEmpty {
            html += "<h2>Schedules</h2><div class=\"grid\">"
            for f in schedules {
                html += "<figure><img src=\"\(inline(run.appendingPathComponent(f.file)))\" alt=\"\(escape(f.title))\"><figcaption>\(escape(f.caption))</figcaption></figure>"
            }
            html += "</div>\n"
        }
        for s in sheets {
            html += "<h2>\(escape(s.title.prefix(1).uppercased() + s.title.dropFirst()))</h2><figure><img src=\"\(inline(s.url))\" alt=\"\(escape(s.title))\"><figcaption>Last-layer CLS attention of the teacher: the input, the mean over heads, over the image, and the patches holding 60% of the attention, then each head.</figcaption></figure>\n"
        }
        html += "<h2>Recipe</h2><pre>\(escape(recipe.yaml))</pre>\n</body></html>\n"
        return html
    }
}
