"""Evaluation (docs/EVALUATION.md): the FID Inception's features (`features`), FID / IS /
precision-recall (`fid`, `inception_score`, `precision_recall`), what the ADM evaluator reports of
a sample batch (`generation`), a tokenizer's rFID / PSNR / SSIM / LPIPS (`reconstruction`), the
ADM npz format (`reference_batch`), PSNR / SSIM (`image_metrics`) and the image sources of
rFID (`image_source`). The `fid`, `rfid` and `reconstruct` modes are in `alitok_jax/commands/`."""
