"""Using a trained model: load it, interpret images, search a gallery, export a SavedModel.

predictor.py   load_predictor(path): a run folder, `.keras` file or SavedModel → Predictor
interpret.py   describe / interpret / format_description of images by aspect
search.py      gallery embeddings (cached) and the nearest images to a query
embed.py       embeddings and probabilities of a whole CSV or image folder, for an .npz file
text_search.py CLIP: images ranked for a text (rank_by_text, embed_images)
export.py      the uint8 `serve` SavedModel endpoint and the safe `.keras` loader
"""
