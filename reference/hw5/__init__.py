"""CS 4391 Homework 5: fully-connected layer, ReLU, softmax loss and L2 regularization in numpy."""
