"""An example Careloop extension: each module adds one type through the plugin entry points."""
