"""Training losses of the tokenizer (ALITOK_REFERENCE.md section 2): perceptual (ConvNeXt-S logits),
LPIPS, and the GAN's hinge losses."""
