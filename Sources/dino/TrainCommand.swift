import ArgumentParser
import DinoData
import DinoDistributed
import DinoKernels
import DinoModel
import DinoTraining
import Dispatch
import Foundation

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a ViT by DINO self-distillation (no labels) from a recipe, or on a folder with a recipe chosen for it.",
        discussion: """
        RUN receives recipe.yaml (the merged recipe), log.jsonl (one JSON line per step), \
        checkpoint.safetensors (everything needed to resume, written atomically), \
        teacher_backbone.safetensors (for dino features / knn / attention), and knn.jsonl and \
        attention/ when the recipe evaluates during training. Ctrl-C saves a checkpoint and exits; \
        --resume continues with the same losses as an uninterrupted run (also after a kill); a second run \
        on a RUN in use is refused. A collapsed teacher restarts \
        the run with half the lr from checkpoint-healthy.safetensors (recipe key on_collapse).
        """)

    @Option(help: "A YAML recipe (keys: the official main_dino.py argument names; see Recipes/README.md).")
    var recipe: String?
    @Option(help: ArgumentHelp("A folder of JPEG/PNG images to train on (class subfolders, if any, give the k-NN check labels). Without --recipe, the recipe is chosen from the folder (image count, size, channels), printed, and written to RUN/recipe.yaml.", valueName: "FOLDER"))
    var data: String?
    @Option(help: ArgumentHelp("Time box in minutes of training (recipe key max_minutes; default with --data and no recipe: \(Int(FolderRecipe.defaultMinutes))).", valueName: "M"))
    var minutes: Double?
    @Option(help: "The run folder.") var output: String
    @Option(name: .customLong("set"), parsing: .singleValue, help: "Override a recipe key: --set lr=0.001 (repeatable).")
    var overrides: [String] = []
    @Flag(help: "Continue the run in --output from its checkpoint.") var resume = false
    @Option(name: .customLong("init-from"), help: ArgumentHelp("Start from published weights (recipe key init_from): " + checkpointHelp + " The architecture and normalization are the file's; a fresh DINO head first trains alone with the backbone frozen (freeze_backbone_steps).", valueName: "FILE"))
    var initFrom: String?
    @OptionGroup var threads: ThreadOptions

    func validate() throws {
        try requirePath(recipe, "--recipe")
        try requirePath(data, "--data")
        try requireFolderPath(output, "--output")
        try requirePath(initFrom, "--init-from")
        if let minutes { try require(minutes > 0 && minutes.isFinite, "--minutes must be a positive number of minutes") }
        if let data {
            do { try requireRunOutside(data) } catch let error as DinoError { throw ValidationError(error.message) }
        }
        // Nothing chosen at all would run main_dino.py's defaults (ViT-S/16, 100 epochs of 224 px crops):
        // weeks on a CPU, with a minute of silence before the first step says so.
        let run = URL(fileURLWithPath: output)
        let resumable = resume && ["recipe.yaml", "checkpoint.safetensors"].contains {
            FileManager.default.fileExists(atPath: run.appendingPathComponent($0).path)
        }
        try require(recipe != nil || data != nil || !overrides.isEmpty || resumable,
                    "give --recipe R (e.g. Recipes/fashion-mnist.yaml: 30 minutes on Fashion-MNIST) or --data FOLDER (a recipe chosen for the folder); with neither, dino train would run DINO's ViT-S/16 defaults, 100 epochs of 224 px crops: weeks on a CPU")
    }

    /// Refuses a run folder inside the data folder: the run writes pictures (attention sheets, the report's
    /// charts) that the next scan of the folder (a resume, knn on it) would read as training images.
    func requireRunOutside(_ dataPath: String) throws {
        let data = URL(fileURLWithPath: dataPath).resolvingSymlinksInPath().path
        let run = URL(fileURLWithPath: output).resolvingSymlinksInPath().path
        guard run != data && !run.hasPrefix(data.hasSuffix("/") ? data : data + "/") else {
            throw DinoError("--output \(output) lies inside the data folder \(dataPath): the run's pictures would be read as training images; put the run beside the folder, not in it")
        }
    }

    /// The recipe: a file, the one a resumed run wrote, or one chosen for --data; then --data, --minutes,
    /// --init-from and --set, in that order.
    func loadRecipe() throws -> Recipe {
        let written = URL(fileURLWithPath: output).appendingPathComponent("recipe.yaml")
        var recipe: Recipe
        let checkpoint = URL(fileURLWithPath: output).appendingPathComponent("checkpoint.safetensors")
        if self.recipe == nil && resume && FileManager.default.fileExists(atPath: written.path) {
            print("resuming with the run's own \(written.path)")
            recipe = try Recipe.load(path: written.path, validate: false)
        } else if self.recipe == nil && data == nil && resume, FileManager.default.fileExists(atPath: checkpoint.path) {
            // recipe.yaml deleted or lost: the checkpoint carries the recipe it was trained with.
            guard let saved = try SafeTensors.read(checkpoint).metadata["dino.recipe"] else {
                throw DinoError("\(output) has no recipe.yaml and \(checkpoint.path) holds no recipe: give --recipe (the one the run was trained with)")
            }
            print("resuming with the recipe saved in \(checkpoint.path) (\(written.path) is missing)")
            recipe = Recipe()
            try recipe.apply(yaml: saved, source: "the recipe in \(checkpoint.path)")
        } else if self.recipe == nil, let data {
            let survey = try FolderSurvey.measure(path: data)
            recipe = try FolderRecipe.recipe(for: survey, minutes: minutes ?? FolderRecipe.defaultMinutes)
            print("recipe chosen from the folder (written to \(written.path); --set key=value changes a key):")
            for line in recipe.note.split(separator: "\n") { print("  " + line) }
        } else {
            recipe = try Recipe.load(path: self.recipe, validate: false)
        }
        if let data { recipe.dataset = "folder"; recipe.data_path = data }
        if let minutes { recipe.max_minutes = minutes }
        if let initFrom { recipe.init_from = initFrom }
        for o in overrides { try recipe.apply(override: o) }
        try recipe.validate()
        return recipe
    }

    func run() throws {
        try runReportingErrors {
            let recipe = try loadRecipe()
            if recipe.dataset == "folder" && !recipe.data_path.isEmpty { try requireRunOutside(recipe.data_path) }
            // Under mpirun, one process per rank: rank 0 prints and writes; each takes its share of the cores.
            let communicator: any Communicator = MPICommunicator.isLaunchedByMPI ? try MPICommunicator() : SingleProcess()
            if communicator.size > 1 && threads.threads == nil && recipe.threads == 0 && ProcessInfo.processInfo.environment["DINO_THREADS"] == nil {
                Parallel.setThreadCount(MPICommunicator.threadsPerProcess)
            }
            if threads.threads == nil && recipe.threads > 0 { Parallel.setThreadCount(recipe.threads) }
            try threads.apply()
            if !communicator.isPrimary { quiet() }
            let trainer = try Trainer(recipe: recipe, output: URL(fileURLWithPath: output), resume: resume, communicator: communicator)
            if let note = (trainer.fullData as? ImageFolder)?.otherFormatsNote { print("warning: " + note) }
            if resume && trainer.step == 0 { print("nothing to resume in \(output) yet (no checkpoint.safetensors): starting the run from step 0") }
            if let start = trainer.initialWeightsDescription { print(start) }
            if trainer.frozenBackboneSteps > trainer.step {
                print("steps \(trainer.step)..<\(trainer.frozenBackboneSteps) train the head alone, the backbone frozen (freeze_backbone_steps)")
            }
            let (finished, summary) = try trainRecoveringFromCollapse(trainer)
            let ending = summary.interrupted ? "stopped after" : summary.timeBoxReached ? "stopped at max_minutes after" : "finished"
            print("\(ending) \(summary.steps) steps"
                  + (summary.finalLoss.isNaN ? "" : ", final loss \(String(format: "%.4f", summary.finalLoss))")
                  + (summary.skippedImages > 0 ? ", \(summary.skippedImages) unreadable image(s) skipped" : ""))
            print("checkpoint: \(summary.checkpoint.path)\nteacher backbone: \(summary.teacherBackbone.path)")
            if !summary.interrupted && communicator.isPrimary { print("report: \(try writeReport(finished.output).path)") }
            (communicator as? MPICommunicator)?.finish()
        }
    }
}

/// Trains; after a collapse, restarts as the recipe's `on_collapse: restart` says (at most
/// `Trainer.maximumRestarts` times, one process only), or stops with the advice.
func trainRecoveringFromCollapse(_ first: Trainer) throws -> (Trainer, TrainingSummary) {
    var trainer = first, restarts = 0
    while true {
        do { return (trainer, try train(trainer)) } catch let collapse as TrainingCollapse {
            guard trainer.recipe.on_collapse == "restart", restarts < Trainer.maximumRestarts, trainer.communicator.size == 1 else {
                let why = trainer.recipe.on_collapse != "restart" ? "" : restarts > 0 ? " (after \(restarts) restarts)" : " (restarts need a single process)"
                throw DinoError(collapse.description + why)
            }
            restarts += 1
            let next = try trainer.restarted(after: collapse)
            FileHandle.standardError.write(Data("warning: \(next.message)\n".utf8))
            trainer = next.trainer
        }
    }
}

/// Runs a trainer with a live progress line, warnings on their own lines, and Ctrl-C handling.
func train(_ trainer: Trainer) throws -> TrainingSummary {
    signal(SIGINT, SIG_IGN)
    let interrupt = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
    var interrupts = 0
    interrupt.setEventHandler {
        interrupts += 1
        if interrupts > 1 { exit(130) }
        FileHandle.standardError.write(Data("\ninterrupt: saving a checkpoint after this step (Ctrl-C again to quit at once)\n".utf8))
        trainer.stopFlag.request()
    }
    interrupt.resume()
    defer { interrupt.cancel(); signal(SIGINT, SIG_DFL) }
    let line = ProgressLine()
    let primary = trainer.communicator.isPrimary  // the other ranks of an MPI run report nothing
    return try trainer.run { event in
        guard primary else { return }
        switch event {
        case .message(let text):
            line.finish(); print(text)
        case .warning(let text):
            line.finish(); FileHandle.standardError.write(Data("warning: \(text)\n".utf8))
        case .knn(let epoch, let step, let top1):
            line.finish(); print(String(format: "epoch %d (step %d): teacher k-NN top-1 %.2f%%", epoch, step, top1))
        case .step(let r, let total):
            let koleo = (r.koleo != 0 ? String(format: "  KoLeo %.4f", r.koleo) : "")
                + (r.ibot != 0 ? String(format: "  iBOT %.4f", r.ibot) : "")
            line.update(String(format: "step %d/%d  epoch %d  loss %.4f  KL %.4f  H(teacher) %.3f%@  lr %.2e  %.0f img/s  ETA %@",
                               r.step, total, r.epoch, r.loss, r.kl, r.teacher_entropy, koleo, r.lr, r.images_per_s,
                               duration(r.eta_s)),
                        force: r.step == total)
            if r.step == total { line.finish() }
        }
    }
}

func duration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "?" }
    let s = Int(seconds)
    return s >= 3600 ? "\(s / 3600)h\(String(format: "%02d", s % 3600 / 60))m" : s >= 60 ? "\(s / 60)m\(String(format: "%02d", s % 60))s" : "\(s)s"
}

/// Writes the run's report; a report that cannot be written is a warning, not a failed run.
func writeReport(_ run: URL) throws -> URL {
    do { return try RunReport.write(run: run) } catch {
        FileHandle.standardError.write(Data("warning: the report was not written: \(error)\n".utf8))
        return run.appendingPathComponent("report.html")
    }
}

/// Sends this process's standard output to /dev/null: the other ranks of an MPI run print nothing but
/// errors (rank 0 reports for all).
func quiet() {
    fflush(stdout)
    let null = open("/dev/null", O_WRONLY)
    if null >= 0 { dup2(null, STDOUT_FILENO); close(null) }
}
