"""Release: building the artifacts and deploying the CloudFormation stack.

``package`` builds the Lambda code zip, the polars layer and the Glue job; ``deploy`` uploads
them and runs a change set; ``template`` reads and checks the template. Sits beside the CLI and
may import ``core.aws``; never shipped to Lambda or Glue.
"""
