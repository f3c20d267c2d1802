print("dino-bench: not built yet")
