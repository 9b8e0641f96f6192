"""Package data: the shipped weights (``*.safetensors``), their model cards (``*.md``) and
``index.json`` (model name -> file, sha256, card). Read by `ge2mst.models.pretrained`."""
