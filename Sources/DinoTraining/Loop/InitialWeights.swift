import DinoKernels
import DinoModel
import Foundation

/// Published weights a run starts from (`init_from`): the backbone of any file `dino` reads, and the DINO
/// head when the file is a training checkpoint that has one (the official `main_dino.py` checkpoints do;
/// DINOv2's heads were never published).
struct InitialWeights {
    let backbone: BackboneCheckpoint
    let head: HeadCheckpoint?
    let path: String
    /// The file had no DINO head: the run starts with a fresh one (and the automatic head warm-up).
    let freshHead: Bool
    /// Read back from the run's own checkpoint on `--resume` (the file itself is then not needed).
    var resumed = false

    init(path: String, recipe: Recipe) throws {
        let url = URL(fileURLWithPath: path)
        guard FileManager.default.fileExists(atPath: path) else {
            throw DinoError("init_from \(path) does not exist: give a checkpoint file or a Hugging Face model folder")
        }
        backbone = try BackboneCheckpoint.load(from: url)
        let channels = backbone.config.inChannels
        guard channels == recipe.in_chans else {
            throw DinoError("init_from \(path) is a \(channels)-channel model but the recipe has in_chans \(recipe.in_chans): set in_chans: \(channels)\(channels == 3 ? " (gray images are then read as RGB)" : "")")
        }
        head = try HeadCheckpoint.load(from: url, normLastLayer: recipe.norm_last_layer)
        self.path = path
        freshHead = head == nil
    }

    /// What a resumed run started from, read from its own training checkpoint, which holds the architecture,
    /// the normalization and the head (the weights themselves come from the checkpoint's restore).
    init(resumingFrom checkpoint: URL, recipe: Recipe) throws {
        let file = try SafeTensors.read(checkpoint)
        backbone = try BackboneCheckpoint.load(file, path: checkpoint.path)
        head = try HeadCheckpoint.head(in: file, normLastLayer: recipe.norm_last_layer, path: checkpoint.path)
        path = recipe.init_from
        freshHead = file.metadata[Self.freshHeadKey] == "true"
        resumed = true
    }

    /// The training checkpoint's metadata key that records whether the run started with a fresh head.
    static let freshHeadKey = "dino.init_fresh_head"

    /// Copies the weights into the student and the teacher (the backbone's tensors come first in the
    /// model layout, then the head's).
    func load(into model: SelfDistillation) {
        for buffer in [model.student, model.teacher] {
            buffer.pointer.update(from: backbone.parameters.pointer, count: backbone.layout.count)
            if let head, let first = model.layout.entries.first(where: { $0.name.hasPrefix("head.") }) {
                (buffer.pointer + first.offset).update(from: head.parameters.pointer, count: head.parameters.count)
            }
        }
    }

    /// In words, for the run's first lines.
    var description: String {
        let c = backbone.config
        if resumed { return "resuming a run that started from \(path): \(c.embedDim)-wide, depth \(c.depth), patch \(c.patchSize)" }
        return "starting from \(path) (\(backbone.source)): \(c.embedDim)-wide, depth \(c.depth), patch \(c.patchSize)"
            + (head.map { ", with its DINO head (\($0.config.outDim) prototypes, from '\($0.prefix)')" } ?? ", with a fresh DINO head")
    }
}
