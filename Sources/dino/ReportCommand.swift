import ArgumentParser
import DinoTraining
import Foundation

struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Write RUN/report.html: a run's curves, k-NN, attention sheets, recipe and machine on one self-contained page.",
        discussion: """
        The page holds its pictures inline (open it in any browser, offline), and the curves are also \
        written as PNG to RUN/report/: loss, teacher entropy against ln(out_dim) and KL (collapse shows \
        there), the lr, weight-decay, momentum and teacher-temperature schedules, images/s, the per-epoch \
        k-NN; with labelled data, a 2-D PCA map of the teacher's features and the k-NN confusion matrix on \
        the validation split. dino train and dino quickstart write it when they finish.
        """)

    @Argument(help: ArgumentHelp("The run folder (the --output of dino train or dino quickstart).", valueName: "RUN"))
    var folder: String
    @Flag(name: .customLong("no-evaluation"), help: "Skip the feature map and confusion matrix (no feature extraction).")
    var noEvaluation = false
    @OptionGroup var threads: ThreadOptions

    func validate() throws {
        try requirePath(folder, "<RUN>")
    }

    func run() throws {
        try threads.apply()
        try runReportingErrors {
            let url = try RunReport.write(run: URL(fileURLWithPath: folder), evaluate: !noEvaluation) { print($0) }
            print("report: \(url.path)")
        }
    }
}
