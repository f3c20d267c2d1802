print("dino")
