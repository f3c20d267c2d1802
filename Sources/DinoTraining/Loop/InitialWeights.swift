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
    }

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
        return "starting from \(path) (\(backbone.source)): \(c.embedDim)-wide, depth \(c.depth), patch \(c.patchSize)"
            + (head.map { ", with its DINO head (\($0.config.outDim) prototypes, from '\($0.prefix)')" } ?? ", with a fresh DINO head")
    }
}
