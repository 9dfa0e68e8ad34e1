"""Digital vs analog ResNet-20 forward benchmark (same as ``xbarlab bench``; ``--model vit-tiny`` for the ViT)."""

from xbarlab.cli.core import bench

if __name__ == "__main__":
    bench(batch=256, repeats=5, device="cpu", model="resnet20")
