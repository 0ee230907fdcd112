"""`tunewise sweep`: a grid of `tunewise sft` runs, one after another, evaluated and tabulated; resumable.

  tunewise sweep --dataset self_cognition --learning_rate 1e-3,1e-4,5e-5 --num_train_epochs 3,5,10,15,20

grid.py   argv -> the trials (a scalar sft flag given as a comma list is an axis), every trial's flags checked
trend.py  final loss and the loss-trend rule (converged / still falling / oscillating / diverged)
report.py the recommended trial, results.csv, results.md and loss_curves.png
run.py    the loop: train each trial (`tunewise sft` in a subprocess), evaluate its last checkpoint, write results
"""
