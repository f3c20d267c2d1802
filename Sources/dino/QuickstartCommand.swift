import ArgumentParser
import DinoKernels
import DinoTraining
import Foundation

struct Quickstart: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train the quick recipe on Fashion-MNIST, report teacher k-NN next to the raw-pixel floor, write attention sheets and a run report.")

    @Option(help: "Run folder.") var output = "runs/quickstart"
    @Option(name: .customLong("set"), parsing: .singleValue, help: "Override a key of the quick recipe (repeatable).")
    var overrides: [String] = []
    @Option(name: .customLong("knn-train-size"), help: "Training images in the k-NN memory bank.") var knnTrainSize = 60000
    @Option(name: .customLong("knn-test-size"), help: "Test images k-NN classifies.") var knnTestSize = 10000
    @Flag(help: "Continue an interrupted quick-start run.") var resume = false
    @OptionGroup var threads: ThreadOptions

    func validate() throws {
        try requireFolderPath(output, "--output")
        try require(knnTrainSize >= 1 && knnTestSize >= 1, "--knn-train-size and --knn-test-size must be at least 1")
    }

    func run() throws {
        try threads.apply()
        try runReportingErrors {
            let started = Date()
            let recipe = try DinoTraining.Quickstart.recipe(overrides: overrides)
            let folder = URL(fileURLWithPath: output)
            let (trainer, summary) = try trainRecoveringFromCollapse(try Trainer(recipe: recipe, output: folder, resume: resume))
            if summary.interrupted { return }
            let trainedSeconds = Date().timeIntervalSince(started)
            let report = try DinoTraining.Quickstart.evaluate(backbone: trainer.teacherBackbone(), output: folder,
                                                             trainSize: knnTrainSize, testSize: knnTestSize) { print($0) }
            print("")
            print("== quick start: done in \(duration(Date().timeIntervalSince(started))) (training \(duration(trainedSeconds)), \(summary.steps) steps) ==")
            print(String(format: "teacher weighted 20-NN top-1: %.2f%%  (CLS token; %d train / %d test images, each %@)", report.knn.top1, report.trainImages,
                         report.testImages, report.transform))
            print(String(format: "  with the mean patch token:  %.2f%%  (CLS + average-pooled patch tokens, eval_linear.py's --avgpool_patchtokens; dino knn --avgpool)", report.knnWithMeanPatchToken.top1))
            print(String(format: "raw-pixel floor:              %.2f%%  (1-NN %.2f%%)", DinoTraining.Quickstart.rawPixelFloor20NN, DinoTraining.Quickstart.rawPixelFloor1NN))
            print(String(format: "attention on the object:      %.1f%% of the mean CLS attention mass (%d test images)", 100 * report.foregroundShare, report.foregroundImages))
            print("attention sheets: \(report.attentionFolder.appendingPathComponent("attention-overview.png").path) (and NAME-sheet.png per image; \(report.attentionFiles.count) PNGs in all)")
            print("teacher backbone: \(summary.teacherBackbone.path)")
            print("report:           \(try writeReport(folder).path) (open it in a browser)")
            print("training log:     \(folder.appendingPathComponent("log.jsonl").path)")
            if summary.collapseWarned { print("warning: a collapse warning fired during training (see above)") }
        }
    }
}
