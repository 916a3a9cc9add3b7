"""Writing Hugging Face model folders (shared by the tools that build them)."""
import json
import os


def save_sharded(tensors, folder, shards=2):
    """Writes torch tensors as `shards` safetensors files plus
    model.safetensors.index.json (names sorted, split evenly by count)."""
    from safetensors.torch import save_file
    names = sorted(tensors)
    step = -(-len(names) // shards)
    weight_map = {}
    for i in range(shards):
        part = names[i * step:(i + 1) * step]
        shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: tensors[k] for k in part}, os.path.join(folder, shard), metadata={"format": "pt"})
        weight_map.update({k: shard for k in part})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
